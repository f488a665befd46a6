/*
 * shardwork_plugin.h - the Shardwork plugin contract, ABI version 1.0.
 *
 * A plugin is an ELF shared object that defines one C symbol, `shardwork_plugin_entry`. The host
 * calls it once after dlopen and receives a descriptor: a magic number, the ABI version and the
 * struct sizes the plugin was compiled with, the plugin's name, version and toolchain, and the list
 * of providers it offers. Each provider is one named implementation of one kind (job type, sharding
 * strategy, executor strategy, error handler, job listener) given as a table of C function pointers
 * with an opaque context and a release function.
 *
 * Rules that keep the contract stable:
 *  - Every struct that one side fills for the other starts with its size (`struct_size`), except the
 *    descriptor, whose first 16 bytes (magic, ABI major, ABI minor, descriptor size) never move.
 *  - A new minor version only appends fields at the end of structs. The host accepts plugins built
 *    for its own or an older minor version of the same major, and refuses a newer minor.
 *  - All strings are NUL-terminated UTF-8. Strings and tables that a plugin returns from the entry
 *    must stay valid for the life of the process (plugins are never unloaded).
 *  - Strings and structs the host passes into a call are valid only during that call.
 *  - A function returns SHARDWORK_OK (0) on success. Any other value means failure; the plugin then
 *    describes the failure in the `shardwork_error` the host passed in.
 *  - The host calls providers from its own threads, and may call one instance from several
 *    threads at once (different items of one fire, different jobs' fires): instances must be
 *    thread-safe. Most are stateless; guard any state an instance keeps.
 *
 * Swift authors use the ShardworkSDK module instead of this header; C authors include it directly.
 * See docs/plugin-guide.md.
 */
#ifndef SHARDWORK_PLUGIN_H
#define SHARDWORK_PLUGIN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------- */
/* Versions and constants                                                                          */
/* ---------------------------------------------------------------------------------------------- */

/** "SHARDWK!" read as a big-endian 64-bit integer. */
#define SHARDWORK_PLUGIN_MAGIC 0x5348415244574B21ULL
#define SHARDWORK_ABI_MAJOR 1
#define SHARDWORK_ABI_MINOR 0

/** The one symbol a plugin must define (with default visibility). */
#define SHARDWORK_PLUGIN_ENTRY_SYMBOL "shardwork_plugin_entry"

/** The toolchain fingerprint of a plugin written in C (or any language that only speaks this ABI). */
#define SHARDWORK_TOOLCHAIN_C "c"

/** Provider kinds. */
#define SHARDWORK_KIND_JOB_TYPE 1u
#define SHARDWORK_KIND_SHARDING_STRATEGY 2u
#define SHARDWORK_KIND_EXECUTOR_STRATEGY 3u
#define SHARDWORK_KIND_ERROR_HANDLER 4u
#define SHARDWORK_KIND_JOB_LISTENER 5u

/** Return codes. */
#define SHARDWORK_OK 0
/** The call failed; the error says why. */
#define SHARDWORK_FAILED 1
/** `create`: the configuration (properties) is invalid; the error names the property in `field`. */
#define SHARDWORK_INVALID_CONFIGURATION 2
/** Error handlers only: the failure must propagate and abort the rest of the fire (ElasticJob THROW). */
#define SHARDWORK_PROPAGATE 3

/** Log levels, the same as swift-log's. */
#define SHARDWORK_LOG_TRACE 0
#define SHARDWORK_LOG_DEBUG 1
#define SHARDWORK_LOG_INFO 2
#define SHARDWORK_LOG_NOTICE 3
#define SHARDWORK_LOG_WARNING 4
#define SHARDWORK_LOG_ERROR 5
#define SHARDWORK_LOG_CRITICAL 6

#if defined(__GNUC__) || defined(__clang__)
#define SHARDWORK_EXPORT __attribute__((visibility("default")))
#else
#define SHARDWORK_EXPORT
#endif

/* ---------------------------------------------------------------------------------------------- */
/* Values passed between host and plugin                                                           */
/* ---------------------------------------------------------------------------------------------- */

#define SHARDWORK_ERROR_MESSAGE_CAPACITY 4096
#define SHARDWORK_ERROR_FIELD_CAPACITY 256

/** A failure description. The host owns it and zeroes it before each call. */
typedef struct shardwork_error {
    uint32_t struct_size;
    /** A plugin-defined code (for example a process exit status); 0 when there is none. */
    int32_t code;
    /** What went wrong, in words a user can act on. */
    char message[SHARDWORK_ERROR_MESSAGE_CAPACITY];
    /** The configuration key at fault (for example "fixed.threads"); empty when there is none. */
    char field[SHARDWORK_ERROR_FIELD_CAPACITY];
} shardwork_error;

/** Fills an error, truncating at the capacities. Either string may be NULL. */
static inline void shardwork_error_set(shardwork_error *error, int32_t code, const char *field,
                                       const char *message) {
    if (error == NULL) return;
    error->code = code;
    error->message[0] = '\0';
    error->field[0] = '\0';
    if (message != NULL) {
        strncpy(error->message, message, SHARDWORK_ERROR_MESSAGE_CAPACITY - 1);
        error->message[SHARDWORK_ERROR_MESSAGE_CAPACITY - 1] = '\0';
    }
    if (field != NULL) {
        strncpy(error->field, field, SHARDWORK_ERROR_FIELD_CAPACITY - 1);
        error->field[SHARDWORK_ERROR_FIELD_CAPACITY - 1] = '\0';
    }
}

/** One `props` entry of a job's configuration. */
typedef struct shardwork_property {
    const char *key;
    const char *value;
} shardwork_property;

/** A job's `props`, in the order of its configuration. */
typedef struct shardwork_properties {
    uint32_t count;
    const shardwork_property *items;
} shardwork_properties;

/** Returns the value of `key`, or NULL. */
static inline const char *shardwork_property_get(const shardwork_properties *properties, const char *key) {
    if (properties == NULL || key == NULL) return NULL;
    for (uint32_t i = 0; i < properties->count; i++) {
        if (properties->items[i].key != NULL && strcmp(properties->items[i].key, key) == 0) {
            return properties->items[i].value;
        }
    }
    return NULL;
}

/** What the host tells a provider when it makes an instance for one job. */
typedef struct shardwork_provider_setup {
    uint32_t struct_size;
    /** The job the instance serves. */
    const char *job_name;
    /** The name the job's configuration used to pick this provider (may be an alias). */
    const char *provider_name;
    /** The job's `props`. */
    shardwork_properties properties;
} shardwork_provider_setup;

/** Services the host offers to a plugin; given to the entry, valid for the life of the process. */
typedef struct shardwork_host_api {
    uint32_t struct_size;
    uint16_t abi_major;
    uint16_t abi_minor;
    void *host_context;
    /** Logs a message under the plugin's name. Safe to call from any thread. */
    void (*log)(void *host_context, int32_t level, const char *message);
} shardwork_host_api;

/* ---------------------------------------------------------------------------------------------- */
/* Job types                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

/** Services the host offers to one running item; valid during the call that received it. */
typedef struct shardwork_item_host_api {
    uint32_t struct_size;
    /** 1 once the host asks the item to stop (shutdown, lost registry, timeout), else 0. */
    int32_t (*is_cancelled)(void *item_host_context);
    /** 1 if `epoch` is still the current fencing epoch of the item, 0 if superseded, -1 if unknown. */
    int32_t (*is_epoch_current)(void *item_host_context, uint64_t epoch);
    /** Logs a message tagged with the job, item and fire. */
    void (*log)(void *item_host_context, int32_t level, const char *message);
} shardwork_item_host_api;

/** The sharding context of one item of one fire (ElasticJob's ShardingContext, plus fencing). */
typedef struct shardwork_item_context {
    uint32_t struct_size;
    const char *job_name;
    /** ElasticJob's task id: {job}@-@{items}@-@READY@-@{instance id}. */
    const char *task_id;
    uint32_t sharding_total_count;
    const char *job_parameter;
    uint32_t sharding_item;
    /** The item's parameter from shardingItemParameters, or NULL when it has none. */
    const char *sharding_parameter;
    /** The scheduled fire time, milliseconds since the Unix epoch. */
    int64_t fire_time_ms;
    /** The fencing epoch of this item's assignment; only grows. */
    uint64_t fencing_epoch;
    const shardwork_item_host_api *host;
    void *host_context;
} shardwork_item_context;

#define SHARDWORK_JOB_SHAPE_SIMPLE 1u
#define SHARDWORK_JOB_SHAPE_DATAFLOW 2u

/**
 * A job type. Simple jobs implement `execute`; dataflow jobs implement `fetch`, `process` and
 * `release_batch` (set the others to NULL). `execute`, `fetch` and `process` may block; the host calls
 * them on its worker threads, concurrently for different items of the same instance.
 */
typedef struct shardwork_job_type_vtable {
    uint32_t struct_size;
    uint32_t shape;
    int32_t (*create)(void *context, const shardwork_provider_setup *setup, void **instance,
                      shardwork_error *error);
    void (*destroy)(void *instance);
    int32_t (*execute)(void *instance, const shardwork_item_context *item, shardwork_error *error);
    /** Fetches the next batch; sets `*count` to 0 when there is no data. */
    int32_t (*fetch)(void *instance, const shardwork_item_context *item, void **batch, uint64_t *count,
                     shardwork_error *error);
    int32_t (*process)(void *instance, const shardwork_item_context *item, void *batch,
                       shardwork_error *error);
    void (*release_batch)(void *instance, void *batch);
} shardwork_job_type_vtable;

/* ---------------------------------------------------------------------------------------------- */
/* Sharding strategies                                                                              */
/* ---------------------------------------------------------------------------------------------- */

/**
 * Assigns items 0..total_count-1 to instances. `instance_ids` lists the available instances in the
 * order the host gives them. The strategy writes:
 *  - `key_order[0..instance_count-1]`: a permutation of 0..instance_count-1, the order of the result's
 *    keys (ElasticJob's strategies reorder instances, and that order is observable);
 *  - `owners[0..total_count-1]`: for each item, the index of the instance that owns it, or -1 to leave
 *    the item unassigned.
 * Items of one instance are listed in ascending order.
 */
typedef struct shardwork_sharding_strategy_vtable {
    uint32_t struct_size;
    int32_t (*create)(void *context, const shardwork_provider_setup *setup, void **instance,
                      shardwork_error *error);
    void (*destroy)(void *instance);
    int32_t (*shard)(void *instance, const char *job_name, const char *const *instance_ids,
                     uint32_t instance_count, uint32_t total_count, uint32_t *key_order, int32_t *owners,
                     shardwork_error *error);
} shardwork_sharding_strategy_vtable;

/* ---------------------------------------------------------------------------------------------- */
/* Executor strategies                                                                              */
/* ---------------------------------------------------------------------------------------------- */

/** Decides how many items of one fire of a job run at once, on threads the host owns. */
typedef struct shardwork_executor_strategy_vtable {
    uint32_t struct_size;
    int32_t (*create)(void *context, const shardwork_provider_setup *setup, void **instance,
                      shardwork_error *error);
    void (*destroy)(void *instance);
    int32_t (*thread_count)(void *instance, uint32_t processor_count, uint32_t *thread_count,
                            shardwork_error *error);
} shardwork_executor_strategy_vtable;

/* ---------------------------------------------------------------------------------------------- */
/* Error handlers                                                                                   */
/* ---------------------------------------------------------------------------------------------- */

#define SHARDWORK_FAILURE_ITEM 1u        /* an item's execution failed */
#define SHARDWORK_FAILURE_LISTENER 2u    /* a job listener failed */
#define SHARDWORK_FAILURE_ENVIRONMENT 3u /* the execution environment check failed (clock skew) */

/** One failure of a job. */
typedef struct shardwork_job_failure {
    uint32_t struct_size;
    uint32_t origin;
    const char *job_name;
    const char *task_id;
    /** The failing host's instance id (ip@-@pid) and host name. */
    const char *instance_id;
    const char *host_name;
    /** The item that failed, or -1 when the failure is not an item's. */
    int32_t item;
    int64_t fire_time_ms;
    const char *message;
    int32_t code;
} shardwork_job_failure;

/**
 * Handles failures. `handle` returns SHARDWORK_OK when the failure is dealt with, SHARDWORK_PROPAGATE
 * when it must abort the rest of the fire, or SHARDWORK_FAILED when the handler itself failed. The
 * host calls `handle` off the firing path; it may block (network handlers).
 */
typedef struct shardwork_error_handler_vtable {
    uint32_t struct_size;
    int32_t (*create)(void *context, const shardwork_provider_setup *setup, void **instance,
                      shardwork_error *error);
    void (*destroy)(void *instance);
    int32_t (*handle)(void *instance, const shardwork_job_failure *failure, shardwork_error *error);
} shardwork_error_handler_vtable;

/* ---------------------------------------------------------------------------------------------- */
/* Job listeners                                                                                    */
/* ---------------------------------------------------------------------------------------------- */

#define SHARDWORK_ITEM_SUCCEEDED 0
#define SHARDWORK_ITEM_FAILED 1
#define SHARDWORK_ITEM_NOT_RUN 2

/** One fire of a job on this host. */
typedef struct shardwork_fire {
    uint32_t struct_size;
    const char *job_name;
    const char *task_id;
    uint32_t sharding_total_count;
    const char *job_parameter;
    int64_t fire_time_ms;
    /** The items this host runs in this fire, with their parameters (NULL entries: no parameter). */
    uint32_t item_count;
    const uint32_t *items;
    const char *const *item_parameters;
    /** NULL before the fire; after it, one SHARDWORK_ITEM_* status per entry of `items`. */
    const int32_t *item_statuses;
} shardwork_fire;

/** Runs before and after each fire. Listeners of a job run in ascending `order`. */
typedef struct shardwork_job_listener_vtable {
    uint32_t struct_size;
    int32_t (*create)(void *context, const shardwork_provider_setup *setup, void **instance,
                      shardwork_error *error);
    void (*destroy)(void *instance);
    int32_t (*order)(void *instance);
    int32_t (*before_fire)(void *instance, const shardwork_fire *fire, shardwork_error *error);
    int32_t (*after_fire)(void *instance, const shardwork_fire *fire, shardwork_error *error);
} shardwork_job_listener_vtable;

/* ---------------------------------------------------------------------------------------------- */
/* The descriptor                                                                                   */
/* ---------------------------------------------------------------------------------------------- */

/** One named implementation of one kind. */
typedef struct shardwork_provider {
    /** SHARDWORK_KIND_* */
    uint32_t kind;
    uint32_t alias_count;
    /** The canonical name: letters, digits, '.', '_' and '-', starting with a letter or digit. */
    const char *name;
    /** More names for the same provider (for example ElasticJob's type names). */
    const char *const *aliases;
    /** The kind's table (shardwork_*_vtable); its first field is its size. */
    const void *vtable;
    /** Passed as the first argument of `create`. */
    void *context;
    /** Called once when the host drops the provider (may be NULL). */
    void (*release)(void *context);
} shardwork_provider;

typedef struct shardwork_plugin_descriptor {
    uint64_t magic;
    uint16_t abi_major;
    uint16_t abi_minor;
    /** sizeof(shardwork_plugin_descriptor) as the plugin was compiled. */
    uint32_t descriptor_size;
    /** sizeof(shardwork_provider) as the plugin was compiled. */
    uint32_t provider_size;
    uint32_t provider_count;
    const char *name;
    const char *version;
    /** "c", or "swift-X.Y.Z" for plugins built with the Swift SDK (must equal the host's). */
    const char *toolchain;
    /** The ShardworkSDK version a Swift plugin was built against; NULL for C plugins. */
    const char *sdk_version;
    const shardwork_provider *providers;
} shardwork_plugin_descriptor;

/** The entry every plugin defines. Returns NULL only if the plugin cannot initialise. */
typedef const shardwork_plugin_descriptor *(*shardwork_plugin_entry_fn)(const shardwork_host_api *host);

#ifdef __cplusplus
}
#endif

#endif /* SHARDWORK_PLUGIN_H */
