/*
 * Small C helpers for what Swift cannot say itself: the firing path's cache prefetch, spawning a
 * child in a process group of its own, the crash journal's signal handler, and naming a thread.
 */
#ifndef SHARDWORK_SUPPORT_H
#define SHARDWORK_SUPPORT_H

#include <stddef.h>
#include <sys/types.h>

/** Asks the processor to bring the cache line holding `address` in, without waiting for it. */
static inline void shardwork_prefetch(const void *address) {
    __builtin_prefetch(address, 1, 3);
}

/*
 * Starts `path` with `argv` and `envp` (both NULL-terminated) as the leader of a new process group,
 * so that the whole group can be killed at once (whatever it forks and leaves in the group). Its
 * standard input is `stdin_fd` (or /dev/null when -1), its output and errors go to `stdout_fd` and
 * `stderr_fd`, and it starts in `directory` (unless NULL). Signals the host ignores or handles
 * (SIGPIPE, SIGTERM, SIGINT, SIGHUP, ...) are back to their defaults in the child, and none is
 * blocked. Returns the child's pid, or -errno.
 */
pid_t shardwork_spawn(const char *path, char *const argv[], char *const envp[],
                      int stdin_fd, int stdout_fd, int stderr_fd, const char *directory);

/** A pipe whose two ends are closed on exec (pipe2 with O_CLOEXEC); 0, or -1 with errno set. */
int shardwork_pipe(int fds[2]);

/*
 * 1 when the child `pid` has exited (it is left a zombie, so its pid and process group id cannot
 * be reused until it is reaped), 0 while it runs, -1 on error.
 */
int shardwork_child_exited(pid_t pid);

/*
 * The crash journal. Once installed with the descriptor of an open (append-only) file, a fatal
 * signal (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS) on a thread that is inside a
 * provider call appends one line to it, "crash\t{signal}\t{phase}\t{context}\n", before the
 * handler that was there before (Swift's backtracer, or the default) runs. The context is what the
 * thread set with shardwork_crash_context_swap; nothing is written for a thread outside any call.
 */
void shardwork_crash_journal_install(int fd);

/*
 * Sets this thread's crash context (`context`, `length` bytes, which must stay valid until it is
 * swapped out; NULL for none) and phase, and returns the previous ones through `previous_context`,
 * `previous_length` and `previous_phase`.
 */
void shardwork_crash_context_swap(const char *context, size_t length, int phase,
                                  const char **previous_context, size_t *previous_length, int *previous_phase);

/**
 * Names the calling thread for the kernel (`/proc/{pid}/task/{tid}/comm`; `top -H` shows it). A
 * name longer than 15 bytes is cut there. Returns 0, or an errno value.
 */
int shardwork_name_current_thread(const char *name);

#endif
