/* Functions for the native job's tests (Plugins/NativeJob): plain C, no Shardwork header. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

/* Appends one line describing its arguments to the file named by the job parameter. Returns 0,
 * or 42 when the item's parameter is "fail". */
EXPORT int32_t record_item(int32_t item, const char *item_parameter, const char *job_parameter,
                           const char *job_name, int64_t total, int64_t fire_time) {
    FILE *file = fopen(job_parameter, "a");
    if (file == NULL) return -1;
    fprintf(file, "%s item=%d parameter=%s total=%lld fire=%lld\n", job_name, (int)item, item_parameter,
            (long long)total, (long long)fire_time);
    fclose(file);
    return strcmp(item_parameter, "fail") == 0 ? 42 : 0;
}

/* Returns the fire time less 1,800,000,000,000: zero for that instant, a 64-bit value otherwise. */
EXPORT int64_t since_reference(int64_t fire_time) { return fire_time - INT64_C(1800000000000); }

/* Returns nothing, so it cannot fail. */
EXPORT void nothing(void) {}

/* Not exported: the job must refuse it. */
int32_t hidden(void) { return 0; }
