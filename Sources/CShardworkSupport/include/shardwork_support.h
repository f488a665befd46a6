/*
 * Small C helpers for the host's hot paths, for what Swift cannot say itself.
 */
#ifndef SHARDWORK_SUPPORT_H
#define SHARDWORK_SUPPORT_H

/** Asks the processor to bring the cache line holding `address` in, without waiting for it. */
static inline void shardwork_prefetch(const void *address) {
    __builtin_prefetch(address, 1, 3);
}

#endif
