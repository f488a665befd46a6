/*
 * The trigger-lag benchmark's job type, "lag-probe": each item records how late it started, in
 * microseconds after its scheduled fire time (by the realtime clock), and returns. The benchmark
 * reads the samples through lag_probe_take(). Built by scripts/benchmark into the release build
 * directory; not shipped.
 */
#include "shardwork_plugin.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#define CAPACITY (4 * 1024 * 1024)

static int64_t samples[CAPACITY];
static _Atomic uint64_t sample_count;

SHARDWORK_EXPORT uint64_t lag_probe_take(int64_t *out, uint64_t capacity) {
    uint64_t count = atomic_exchange(&sample_count, 0);
    if (count > CAPACITY) count = CAPACITY;
    if (count > capacity) count = capacity;
    for (uint64_t i = 0; i < count; i++) out[i] = samples[i];
    return count;
}

static int marker;

static int32_t probe_create(void *context, const shardwork_provider_setup *setup, void **instance, shardwork_error *error) {
    (void)context; (void)setup; (void)error;
    *instance = &marker;
    return SHARDWORK_OK;
}

static void probe_destroy(void *instance) { (void)instance; }

static int32_t probe_execute(void *instance, const shardwork_item_context *item, shardwork_error *error) {
    (void)instance; (void)error;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t lag = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000 - item->fire_time_ms * 1000;
    uint64_t index = atomic_fetch_add(&sample_count, 1);
    if (index < CAPACITY) samples[index] = lag;
    return SHARDWORK_OK;
}

static const shardwork_job_type_vtable probe_vtable = {
    .struct_size = sizeof(shardwork_job_type_vtable),
    .shape = SHARDWORK_JOB_SHAPE_SIMPLE,
    .create = probe_create,
    .destroy = probe_destroy,
    .execute = probe_execute,
};

static const shardwork_provider providers[] = {
    {.kind = SHARDWORK_KIND_JOB_TYPE, .name = "lag-probe", .vtable = &probe_vtable},
};

static const shardwork_plugin_descriptor descriptor = {
    .magic = SHARDWORK_PLUGIN_MAGIC,
    .abi_major = SHARDWORK_ABI_MAJOR,
    .abi_minor = SHARDWORK_ABI_MINOR,
    .descriptor_size = sizeof(shardwork_plugin_descriptor),
    .provider_size = sizeof(shardwork_provider),
    .provider_count = 1,
    .name = "lag-probe",
    .version = "1.0.0",
    .toolchain = SHARDWORK_TOOLCHAIN_C,
    .providers = providers,
};

SHARDWORK_EXPORT const shardwork_plugin_descriptor *shardwork_plugin_entry(const shardwork_host_api *host) {
    (void)host;
    return &descriptor;
}
