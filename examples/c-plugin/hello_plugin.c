/*
 * A Shardwork plugin in plain C: a job type and an error handler.
 *
 * Build:  make            (or: cc -shared -fPIC -fvisibility=hidden -I../../SDK/Sources/CShardworkPlugin/include \
 *                               -o libhello_c.so hello_plugin.c)
 * Check:  shardwork plugins inspect ./libhello_c.so
 */
#include "shardwork_plugin.h"

#include <stdio.h>
#include <string.h>

static const shardwork_host_api *host;

/* ---- job type "hello-c": logs a greeting for its item; items whose parameter is "fail" fail ---- */

static int marker; /* instances need no state; any non-NULL pointer will do */

static int32_t hello_create(void *context, const shardwork_provider_setup *setup, void **instance,
                            shardwork_error *error) {
    (void)context;
    const char *greeting = shardwork_property_get(&setup->properties, "hello.greeting");
    if (greeting != NULL && greeting[0] == '\0') {
        shardwork_error_set(error, 0, "hello.greeting", "The property `hello.greeting` must not be empty.");
        return SHARDWORK_INVALID_CONFIGURATION;
    }
    *instance = &marker;
    return SHARDWORK_OK;
}

static void hello_destroy(void *instance) { (void)instance; }

static int32_t hello_execute(void *instance, const shardwork_item_context *item, shardwork_error *error) {
    (void)instance;
    if (item->sharding_parameter != NULL && strcmp(item->sharding_parameter, "fail") == 0) {
        shardwork_error_set(error, 1, NULL, "this item was configured to fail");
        return SHARDWORK_FAILED;
    }
    char line[512];
    snprintf(line, sizeof line, "hello from C: job %s item %u of %u (parameter %s)", item->job_name,
             item->sharding_item, item->sharding_total_count,
             item->sharding_parameter != NULL ? item->sharding_parameter : "none");
    item->host->log(item->host_context, SHARDWORK_LOG_INFO, line);
    return SHARDWORK_OK;
}

static const shardwork_job_type_vtable hello_vtable = {
    .struct_size = sizeof(shardwork_job_type_vtable),
    .shape = SHARDWORK_JOB_SHAPE_SIMPLE,
    .create = hello_create,
    .destroy = hello_destroy,
    .execute = hello_execute,
};

/* ---- error handler "stderr-c": writes each failure to standard error ---- */

static int32_t stderr_handle(void *instance, const shardwork_job_failure *failure, shardwork_error *error) {
    (void)instance; (void)error;
    fprintf(stderr, "job %s item %d failed on %s: %s\n", failure->job_name, failure->item, failure->instance_id,
            failure->message);
    return SHARDWORK_OK;
}

static const shardwork_error_handler_vtable stderr_vtable = {
    .struct_size = sizeof(shardwork_error_handler_vtable),
    .create = hello_create,
    .destroy = hello_destroy,
    .handle = stderr_handle,
};

/* ---- the descriptor ---- */

static const char *const hello_aliases[] = {"HELLO_C"};

static const shardwork_provider providers[] = {
    {.kind = SHARDWORK_KIND_JOB_TYPE, .name = "hello-c", .alias_count = 1, .aliases = hello_aliases,
     .vtable = &hello_vtable},
    {.kind = SHARDWORK_KIND_ERROR_HANDLER, .name = "stderr-c", .vtable = &stderr_vtable},
};

static const shardwork_plugin_descriptor descriptor = {
    .magic = SHARDWORK_PLUGIN_MAGIC,
    .abi_major = SHARDWORK_ABI_MAJOR,
    .abi_minor = SHARDWORK_ABI_MINOR,
    .descriptor_size = sizeof(shardwork_plugin_descriptor),
    .provider_size = sizeof(shardwork_provider),
    .provider_count = sizeof(providers) / sizeof(providers[0]),
    .name = "hello-c",
    .version = "1.0.0",
    .toolchain = SHARDWORK_TOOLCHAIN_C,
    .providers = providers,
};

SHARDWORK_EXPORT const shardwork_plugin_descriptor *shardwork_plugin_entry(const shardwork_host_api *host_api) {
    host = host_api;
    host->log(host->host_context, SHARDWORK_LOG_DEBUG, "hello-c loaded");
    return &descriptor;
}
