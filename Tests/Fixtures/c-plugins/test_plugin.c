/*
 * A plugin in plain C that the tests compile in many variants (-DVARIANT_...), one per loader
 * refusal, plus a sound one that offers a provider of every kind so the host's C calls are tested.
 *
 * Providers (names get NAME_PREFIX, "c" by default):
 *  - sharding strategy "c-modulo": item i goes to instance (i % n); the key order is reversed.
 *  - executor strategy "c-threads": the `c.threads` property, or 3.
 *  - error handler "c-recorder": logs the failure; returns PROPAGATE when the message says "propagate".
 *  - job listener "c-listener": order from the `c.order` property (the prefix's, default 5); logs
 *    before/after with the items; fails when the job parameter is "listener-fails".
 *  - job type "c-crash" (simple): an item whose parameter is "crash" dies of a segmentation fault
 *    after 100 ms; the others log "survived".
 *  - job type "c-wait" (simple): waits `c.wait.ms` milliseconds (default 200; an item parameter that
 *    is a whole number overrides it) in 5 ms steps, stopping early with a failure when the host
 *    cancels the item, unless `c.wait.ignore-cancel` is set. It logs "item N starts waiting" (debug).
 *  - job type "c-echo" (simple): fails items whose parameter is "fail" (code 7); with job parameter
 *    "check-host" it logs what the host says about cancellation and the fencing epoch.
 *  - job type "c-countdown" (dataflow): each fetch returns one batch of 3 until 2 batches were fetched.
 *
 * Hostile behaviour, for the tests that the host survives it:
 *  - every provider whose instance is made by create_plain crashes in `create` (a write through a
 *    null pointer) when the `c.crash.create` property is set (always, in VARIANT_CRASH_CREATE),
 *    and never returns from it when `c.hang.create` is;
 *  - c-echo with job parameter "noisy" logs a forged log line (a line break and a fake timestamp),
 *    terminal escape codes, a 4 MB message, and a message at level 99; with "forged-failure" it
 *    fails with such a message;
 *  - VARIANT_FORK_ON_LOAD: the entry forks a process that sleeps ten minutes holding the plugin's
 *    standard output and error, when it runs in a trial load (`plugins inspect --in-process`);
 *    VARIANT_DAEMON_ON_LOAD: the same, as a daemon (fork, setsid, fork). Either writes the pid of
 *    what it left behind to `{the plugin's file}.pids`.
 */
#define _GNU_SOURCE
#include "shardwork_plugin.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef PLUGIN_NAME
#define PLUGIN_NAME "c-test"
#endif
#ifndef NAME_PREFIX
#define NAME_PREFIX "c"
#endif

static const shardwork_host_api *host_api;

static void host_log(int32_t level, const char *message) {
    if (host_api != NULL && host_api->log != NULL) host_api->log(host_api->host_context, level, message);
}

/* Instances that need no state are a non-NULL marker. */
static int marker;

static int32_t create_plain(void *context, const shardwork_provider_setup *setup, void **instance,
                            shardwork_error *error) {
    (void)context;
#ifdef VARIANT_CRASH_CREATE
    if (1) {
#else
    if (shardwork_property_get(&setup->properties, "c.crash.create") != NULL) {
#endif
        volatile int *nowhere = NULL;
        *nowhere = 1;
    }
    if (shardwork_property_get(&setup->properties, "c.hang.create") != NULL) {
        for (;;) sleep(1);
    }
    if (shardwork_property_get(&setup->properties, "c.reject") != NULL) {
        shardwork_error_set(error, 0, "c.reject", "the property `c.reject` is set, so this instance refuses");
        return SHARDWORK_INVALID_CONFIGURATION;
    }
    *instance = &marker;
    return SHARDWORK_OK;
}

static void destroy_plain(void *instance) { (void)instance; }

/* ---- sharding ---- */

__attribute__((unused)) static int32_t modulo_shard(void *instance, const char *job_name, const char *const *instance_ids,
                            uint32_t instance_count, uint32_t total_count, uint32_t *key_order,
                            int32_t *owners, shardwork_error *error) {
    (void)instance; (void)job_name; (void)instance_ids;
    if (instance_count == 0) {
        for (uint32_t item = 0; item < total_count; item++) owners[item] = -1;
        return SHARDWORK_OK;
    }
    if (total_count == 13) {
        shardwork_error_set(error, 13, NULL, "13 items are unlucky");
        return SHARDWORK_FAILED;
    }
    for (uint32_t k = 0; k < instance_count; k++) key_order[k] = instance_count - 1 - k;
    for (uint32_t item = 0; item < total_count; item++) owners[item] = (int32_t)(item % instance_count);
#ifdef VARIANT_BAD_SHARDING_RESULT
    owners[0] = (int32_t)instance_count; /* an owner index out of range */
#endif
    return SHARDWORK_OK;
}

static shardwork_sharding_strategy_vtable sharding_vtable = {
#ifdef VARIANT_VTABLE_SIZE
    sizeof(shardwork_sharding_strategy_vtable) + 8,
#else
    sizeof(shardwork_sharding_strategy_vtable),
#endif
    create_plain, destroy_plain,
#ifdef VARIANT_NULL_FUNCTION
    NULL,
#else
    modulo_shard,
#endif
};

/* ---- executor ---- */

static int32_t threads_create(void *context, const shardwork_provider_setup *setup, void **instance,
                              shardwork_error *error) {
    (void)context;
    const char *text = shardwork_property_get(&setup->properties, "c.threads");
    long threads = 3;
    if (text != NULL) {
        char *end = NULL;
        threads = strtol(text, &end, 10);
        if (end == text || *end != '\0' || threads <= 0) {
            shardwork_error_set(error, 0, "c.threads", "the property `c.threads` should be a positive integer");
            return SHARDWORK_INVALID_CONFIGURATION;
        }
    }
    *instance = (void *)(intptr_t)threads;
    return SHARDWORK_OK;
}

static int32_t threads_count(void *instance, uint32_t processor_count, uint32_t *thread_count,
                             shardwork_error *error) {
    (void)processor_count; (void)error;
    *thread_count = (uint32_t)(intptr_t)instance;
    return SHARDWORK_OK;
}

static shardwork_executor_strategy_vtable executor_vtable = {
    sizeof(shardwork_executor_strategy_vtable), threads_create, destroy_plain, threads_count,
};

/* ---- error handler ---- */

static int32_t recorder_handle(void *instance, const shardwork_job_failure *failure, shardwork_error *error) {
    (void)instance; (void)error;
    char line[1024];
    snprintf(line, sizeof line, "recorded failure: job=%s item=%d origin=%u code=%d message=%s", failure->job_name,
             failure->item, failure->origin, failure->code, failure->message);
    host_log(SHARDWORK_LOG_ERROR, line);
    return strstr(failure->message, "propagate") != NULL ? SHARDWORK_PROPAGATE : SHARDWORK_OK;
}

static shardwork_error_handler_vtable handler_vtable = {
    sizeof(shardwork_error_handler_vtable), create_plain, destroy_plain, recorder_handle,
};

/* ---- listener ---- */

static int32_t listener_create(void *context, const shardwork_provider_setup *setup, void **instance,
                               shardwork_error *error) {
    (void)context; (void)error;
    const char *text = shardwork_property_get(&setup->properties, NAME_PREFIX ".order");
    *instance = (void *)(intptr_t)(text != NULL ? atoi(text) : 5);
    return SHARDWORK_OK;
}

static int32_t listener_order(void *instance) { return (int32_t)(intptr_t)instance; }

static int32_t listener_fire(void *instance, const shardwork_fire *fire, shardwork_error *error, const char *when) {
    (void)instance;
    char line[1024];
    int used = snprintf(line, sizeof line, "%s: %s fire of %s:", NAME_PREFIX "-listener", when, fire->job_name);
    for (uint32_t i = 0; i < fire->item_count && used < (int)sizeof line - 32; i++) {
        used += snprintf(line + used, sizeof line - (size_t)used, " %u=%s", fire->items[i],
                         fire->item_statuses == NULL ? "pending"
                         : fire->item_statuses[i] == SHARDWORK_ITEM_SUCCEEDED ? "ok"
                                                                              : "failed");
    }
    host_log(SHARDWORK_LOG_INFO, line);
    if (strcmp(fire->job_parameter, "listener-fails") == 0) {
        shardwork_error_set(error, 0, NULL, "the listener fails on purpose");
        return SHARDWORK_FAILED;
    }
    return SHARDWORK_OK;
}

static int32_t listener_before(void *instance, const shardwork_fire *fire, shardwork_error *error) {
    return listener_fire(instance, fire, error, "before");
}

static int32_t listener_after(void *instance, const shardwork_fire *fire, shardwork_error *error) {
    return listener_fire(instance, fire, error, "after");
}

static shardwork_job_listener_vtable listener_vtable = {
    sizeof(shardwork_job_listener_vtable), listener_create, destroy_plain, listener_order, listener_before,
    listener_after,
};

/* ---- job types ---- */

static int32_t echo_execute(void *instance, const shardwork_item_context *item, shardwork_error *error) {
    (void)instance;
    char line[1024];
    if (item->sharding_parameter != NULL && strcmp(item->sharding_parameter, "fail") == 0) {
        snprintf(line, sizeof line, "item %u failed on purpose", item->sharding_item);
        shardwork_error_set(error, 7, NULL, line);
        return SHARDWORK_FAILED;
    }
    if (strcmp(item->job_parameter, "noisy") == 0) {
        item->host->log(item->host_context, SHARDWORK_LOG_INFO,
                        "ordinary\n2026-12-06T00:00:00+0000 critical shardwork: [ShardworkCore] host compromised");
        item->host->log(item->host_context, SHARDWORK_LOG_INFO, "\x1b[2J\x1b[31mred alert\x1b[0m");
        size_t size = 4u << 20;
        char *huge = malloc(size + 1);
        if (huge != NULL) {
            memset(huge, 'x', size);
            huge[size] = 0;
            item->host->log(item->host_context, SHARDWORK_LOG_INFO, huge);
            free(huge);
        }
        item->host->log(item->host_context, 99, "level ninety-nine");
    }
    if (strcmp(item->job_parameter, "forged-failure") == 0) {
        shardwork_error_set(error, 3, NULL, "failed\n2026-12-06T00:00:00+0000 critical shardwork: forged\x1b[31m");
        return SHARDWORK_FAILED;
    }
    if (strcmp(item->job_parameter, "check-host") == 0) {
        snprintf(line, sizeof line, "cancelled=%d epoch %llu current=%d epoch %llu current=%d",
                 item->host->is_cancelled(item->host_context), (unsigned long long)item->fencing_epoch,
                 item->host->is_epoch_current(item->host_context, item->fencing_epoch),
                 (unsigned long long)(item->fencing_epoch + 1),
                 item->host->is_epoch_current(item->host_context, item->fencing_epoch + 1));
        item->host->log(item->host_context, SHARDWORK_LOG_INFO, line);
    }
    snprintf(line, sizeof line, "echo %s item %u/%u parameter %s task %s fired %lld", item->job_name,
             item->sharding_item, item->sharding_total_count,
             item->sharding_parameter != NULL ? item->sharding_parameter : "(none)", item->task_id,
             (long long)item->fire_time_ms);
    item->host->log(item->host_context, SHARDWORK_LOG_INFO, line);
    return SHARDWORK_OK;
}

static shardwork_job_type_vtable echo_vtable = {
    sizeof(shardwork_job_type_vtable), SHARDWORK_JOB_SHAPE_SIMPLE, create_plain, destroy_plain, echo_execute,
    NULL, NULL, NULL,
};

typedef struct countdown { int fetched; } countdown;

static int32_t countdown_create(void *context, const shardwork_provider_setup *setup, void **instance,
                                shardwork_error *error) {
    (void)context; (void)setup; (void)error;
    *instance = calloc(1, sizeof(countdown));
    return *instance != NULL ? SHARDWORK_OK : SHARDWORK_FAILED;
}

static void countdown_destroy(void *instance) { free(instance); }

static int32_t countdown_fetch(void *instance, const shardwork_item_context *item, void **batch, uint64_t *count,
                               shardwork_error *error) {
    (void)item; (void)error;
    countdown *state = instance;
    if (state->fetched >= 2) {
        *batch = NULL;
        *count = 0;
        return SHARDWORK_OK;
    }
    state->fetched++;
    int *values = malloc(3 * sizeof(int));
    values[0] = 1; values[1] = 2; values[2] = 3;
    *batch = values;
    *count = 3;
    return SHARDWORK_OK;
}

static int32_t countdown_process(void *instance, const shardwork_item_context *item, void *batch,
                                 shardwork_error *error) {
    (void)instance; (void)error;
    int *values = batch;
    char line[128];
    snprintf(line, sizeof line, "processed %d+%d+%d", values[0], values[1], values[2]);
    item->host->log(item->host_context, SHARDWORK_LOG_INFO, line);
    return SHARDWORK_OK;
}

static void countdown_release(void *instance, void *batch) {
    (void)instance;
    free(batch);
}

static shardwork_job_type_vtable countdown_vtable = {
    sizeof(shardwork_job_type_vtable), SHARDWORK_JOB_SHAPE_DATAFLOW, countdown_create, countdown_destroy, NULL,
    countdown_fetch, countdown_process, countdown_release,
};

typedef struct waiter { long milliseconds; int ignore_cancel; } waiter;

static int32_t wait_create(void *context, const shardwork_provider_setup *setup, void **instance,
                           shardwork_error *error) {
    (void)context; (void)error;
    waiter *state = calloc(1, sizeof(waiter));
    if (state == NULL) return SHARDWORK_FAILED;
    const char *ms = shardwork_property_get(&setup->properties, NAME_PREFIX ".wait.ms");
    state->milliseconds = ms != NULL ? atol(ms) : 200;
    state->ignore_cancel = shardwork_property_get(&setup->properties, NAME_PREFIX ".wait.ignore-cancel") != NULL;
    *instance = state;
    return SHARDWORK_OK;
}

static void wait_destroy(void *instance) { free(instance); }

static int32_t wait_execute(void *instance, const shardwork_item_context *item, shardwork_error *error) {
    const waiter *state = instance;
    char line[128];
    /* An item parameter of a whole number waits that long instead. */
    long milliseconds = state->milliseconds;
    if (item->sharding_parameter != NULL && atol(item->sharding_parameter) > 0) milliseconds = atol(item->sharding_parameter);
    snprintf(line, sizeof line, "item %u starts waiting %ld ms", item->sharding_item, milliseconds);
    item->host->log(item->host_context, SHARDWORK_LOG_DEBUG, line);
    for (long waited = 0; waited < milliseconds; waited += 5) {
        if (!state->ignore_cancel && item->host->is_cancelled(item->host_context)) {
            snprintf(line, sizeof line, "item %u stopped after %ld ms: cancelled", item->sharding_item, waited);
            item->host->log(item->host_context, SHARDWORK_LOG_INFO, line);
            shardwork_error_set(error, 0, NULL, "cancelled by the host");
            return SHARDWORK_FAILED;
        }
        usleep(5000);
    }
    snprintf(line, sizeof line, "item %u waited %ld ms", item->sharding_item, milliseconds);
    item->host->log(item->host_context, SHARDWORK_LOG_INFO, line);
    return SHARDWORK_OK;
}

static shardwork_job_type_vtable wait_vtable = {
    sizeof(shardwork_job_type_vtable), SHARDWORK_JOB_SHAPE_SIMPLE, wait_create, wait_destroy, wait_execute,
    NULL, NULL, NULL,
};

static int32_t crash_execute(void *instance, const shardwork_item_context *item, shardwork_error *error) {
    (void)instance; (void)error;
    if (item->sharding_parameter != NULL && strcmp(item->sharding_parameter, "crash") == 0) {
        usleep(100000);
        volatile int *nowhere = NULL;
        *nowhere = 1;
    }
    char line[64];
    snprintf(line, sizeof line, "item %u survived", item->sharding_item);
    item->host->log(item->host_context, SHARDWORK_LOG_INFO, line);
    return SHARDWORK_OK;
}

static shardwork_job_type_vtable crash_vtable = {
    sizeof(shardwork_job_type_vtable), SHARDWORK_JOB_SHAPE_SIMPLE, create_plain, destroy_plain, crash_execute,
    NULL, NULL, NULL,
};

/* ---- descriptor ---- */

#ifndef MODULO_ALIAS
#define MODULO_ALIAS "C_MODULO"
#endif
static const char *const modulo_aliases[] = {MODULO_ALIAS};

#ifdef VARIANT_BAD_NAME
#define MODULO_NAME "bad name!"
#else
#define MODULO_NAME NAME_PREFIX "-modulo"
#endif

static shardwork_provider providers[] = {
    {SHARDWORK_KIND_SHARDING_STRATEGY, 1, MODULO_NAME, modulo_aliases, &sharding_vtable, NULL, NULL},
    {SHARDWORK_KIND_EXECUTOR_STRATEGY, 0, NAME_PREFIX "-threads", NULL, &executor_vtable, NULL, NULL},
    {SHARDWORK_KIND_ERROR_HANDLER, 0, NAME_PREFIX "-recorder", NULL, &handler_vtable, NULL, NULL},
    {SHARDWORK_KIND_JOB_LISTENER, 0, NAME_PREFIX "-listener", NULL, &listener_vtable, NULL, NULL},
    {SHARDWORK_KIND_JOB_TYPE, 0, NAME_PREFIX "-echo", NULL, &echo_vtable, NULL, NULL},
    {SHARDWORK_KIND_JOB_TYPE, 0, NAME_PREFIX "-countdown", NULL, &countdown_vtable, NULL, NULL},
    {SHARDWORK_KIND_JOB_TYPE, 0, NAME_PREFIX "-wait", NULL, &wait_vtable, NULL, NULL},
    {SHARDWORK_KIND_JOB_TYPE, 0, NAME_PREFIX "-crash", NULL, &crash_vtable, NULL, NULL},
};

__attribute__((unused)) static shardwork_plugin_descriptor descriptor = {
#ifdef VARIANT_BAD_MAGIC
    0x0123456789ABCDEFULL,
#else
    SHARDWORK_PLUGIN_MAGIC,
#endif
#ifdef VARIANT_ABI_MAJOR
    SHARDWORK_ABI_MAJOR + 1,
#else
    SHARDWORK_ABI_MAJOR,
#endif
#ifdef VARIANT_ABI_MINOR
    SHARDWORK_ABI_MINOR + 1,
#else
    SHARDWORK_ABI_MINOR,
#endif
#ifdef VARIANT_DESCRIPTOR_SIZE
    sizeof(shardwork_plugin_descriptor) - 8,
#else
    sizeof(shardwork_plugin_descriptor),
#endif
    sizeof(shardwork_provider),
    sizeof(providers) / sizeof(providers[0]),
    PLUGIN_NAME,
    "1.0.0",
#ifdef VARIANT_SWIFT_TOOLCHAIN
    "swift-5.10.1",
    "0.0.9",
#else
    SHARDWORK_TOOLCHAIN_C,
    NULL,
#endif
    providers,
};

#ifdef VARIANT_UNDEFINED_SYMBOL
extern int shardwork_test_symbol_that_does_not_exist(void);
int (*keep_undefined)(void) = shardwork_test_symbol_that_does_not_exist;
#endif

#ifdef VARIANT_NO_ENTRY
SHARDWORK_EXPORT int not_a_plugin_entry(void) { return 0; }
#else
#if defined(VARIANT_FORK_ON_LOAD) || defined(VARIANT_DAEMON_ON_LOAD)
/* Appends `pid` to `{this plugin's file}.pids`. */
static void record_pid(pid_t pid) {
    Dl_info info;
    if (dladdr((void *)&record_pid, &info) == 0 || info.dli_fname == NULL) return;
    char path[4096];
    snprintf(path, sizeof path, "%s.pids", info.dli_fname);
    FILE *file = fopen(path, "a");
    if (file == NULL) return;
    fprintf(file, "%d\n", (int)pid);
    fclose(file);
}

/* Whether this process is a trial load (`shardwork plugins inspect --in-process`): the test
   harness keeps its own processes clean by leaving them alone. */
static int in_trial_load(void) {
    FILE *file = fopen("/proc/self/cmdline", "r");
    if (file == NULL) return 0;
    char buffer[4096];
    size_t length = fread(buffer, 1, sizeof buffer - 1, file);
    fclose(file);
    for (size_t start = 0; start < length; start += strlen(buffer + start) + 1) {
        buffer[length] = 0;
        if (strcmp(buffer + start, "--in-process") == 0) return 1;
    }
    return 0;
}

static void leave_something_behind(void) {
    if (!in_trial_load()) return;
    pid_t child = fork();
    if (child != 0) return;
#ifdef VARIANT_DAEMON_ON_LOAD
    setsid();
    if (fork() != 0) _exit(0);
#endif
    record_pid(getpid());
    sleep(600);
    _exit(0);
}
#endif

SHARDWORK_EXPORT const shardwork_plugin_descriptor *shardwork_plugin_entry(const shardwork_host_api *host) {
    host_api = host;
#if defined(VARIANT_FORK_ON_LOAD) || defined(VARIANT_DAEMON_ON_LOAD)
    leave_something_behind();
#endif
#if defined(VARIANT_CRASH)
    volatile int *nowhere = NULL;
    *nowhere = 1;
#elif defined(VARIANT_HANG)
    for (;;) sleep(1);
#endif
#ifdef VARIANT_NULL_ENTRY
    host_log(SHARDWORK_LOG_ERROR, "this plugin cannot initialise");
    return NULL;
#else
    host_log(SHARDWORK_LOG_DEBUG, "c-test plugin entry called");
    return &descriptor;
#endif
}
#endif
