#define _GNU_SOURCE
#include "shardwork_support.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- Children in process groups of their own ---- */

pid_t shardwork_spawn(const char *path, char *const argv[], char *const envp[],
                      int stdin_fd, int stdout_fd, int stderr_fd, const char *directory) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    int status = posix_spawn_file_actions_init(&actions);
    if (status != 0) return -status;
    status = posix_spawnattr_init(&attributes);
    if (status != 0) {
        posix_spawn_file_actions_destroy(&actions);
        return -status;
    }
    if (stdin_fd >= 0) {
        status = posix_spawn_file_actions_adddup2(&actions, stdin_fd, STDIN_FILENO);
    } else {
        status = posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    }
    if (status == 0) status = posix_spawn_file_actions_adddup2(&actions, stdout_fd, STDOUT_FILENO);
    if (status == 0) status = posix_spawn_file_actions_adddup2(&actions, stderr_fd, STDERR_FILENO);
    if (status == 0 && directory != NULL) status = posix_spawn_file_actions_addchdir_np(&actions, directory);
    /* Nothing else of the host's reaches the child: descriptors opened without O_CLOEXEC (by a
       library, or by a plugin) would otherwise stay open in a trial or worker process for as long
       as it lives, keeping a listening socket bound or a file busy for writing or execution. */
    if (status == 0) status = posix_spawn_file_actions_addclosefrom_np(&actions, STDERR_FILENO + 1);

    /* The host ignores SIGPIPE, and swift-service-lifecycle ignores the signals it watches; an
       ignored disposition survives exec, so the child would inherit it. */
    sigset_t defaults;
    sigemptyset(&defaults);
    const int reset[] = {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGCHLD,
                         SIGTSTP, SIGTTIN, SIGTTOU};
    for (size_t index = 0; index < sizeof reset / sizeof reset[0]; index++) sigaddset(&defaults, reset[index]);
    sigset_t none;
    sigemptyset(&none);
    if (status == 0) status = posix_spawnattr_setsigdefault(&attributes, &defaults);
    if (status == 0) status = posix_spawnattr_setsigmask(&attributes, &none);
    if (status == 0) status = posix_spawnattr_setpgroup(&attributes, 0);
    if (status == 0) {
        status = posix_spawnattr_setflags(
            &attributes, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    }
    pid_t pid = -1;
    if (status == 0) status = posix_spawn(&pid, path, &actions, &attributes, argv, envp);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    return status == 0 ? pid : -status;
}

int shardwork_pipe(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int shardwork_child_exited(pid_t pid) {
    siginfo_t info;
    memset(&info, 0, sizeof info);
    if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) != 0) return -1;
    return info.si_pid == pid ? 1 : 0;
}

/* ---- The crash journal ---- */

static int journal_fd = -1;
static volatile sig_atomic_t journal_written = 0;
static struct sigaction previous_actions[65];
static const int fatal_signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS};

static __thread const char *current_context = NULL;
static __thread size_t current_length = 0;
static __thread int current_phase = 0;

static void write_all(int fd, const char *bytes, size_t length) {
    while (length > 0) {
        ssize_t written = write(fd, bytes, length);
        if (written < 0) {
            if (errno == EINTR) continue;
            return;
        }
        bytes += written;
        length -= (size_t)written;
    }
}

/* A small number in decimal, without the library's formatting (not safe in a signal handler). */
static size_t decimal(int value, char *out) {
    char digits[12];
    size_t count = 0;
    unsigned int rest = value < 0 ? 0u : (unsigned int)value;
    do {
        digits[count++] = (char)('0' + rest % 10);
        rest /= 10;
    } while (rest > 0 && count < sizeof digits);
    for (size_t index = 0; index < count; index++) out[index] = digits[count - 1 - index];
    return count;
}

static void on_fatal_signal(int signal_number, siginfo_t *info, void *ucontext) {
    (void)ucontext;
    int saved_errno = errno;
    if (current_context != NULL && journal_fd >= 0 && !journal_written) {
        journal_written = 1;
        char line[48] = "crash\t";
        size_t length = 6;
        length += decimal(signal_number, line + length);
        line[length++] = '\t';
        length += decimal(current_phase, line + length);
        line[length++] = '\t';
        write_all(journal_fd, line, length);
        write_all(journal_fd, current_context, current_length);
        write_all(journal_fd, "\n", 1);
        fsync(journal_fd);
    }
    /* The handler that was there before takes over: for a fault, returning runs the faulting
       instruction again, which now reaches it with its original context; a signal that was sent
       (kill, raise, abort) or a trap that would not repeat is raised again. */
    if (signal_number > 0 && signal_number < 65) sigaction(signal_number, &previous_actions[signal_number], NULL);
    errno = saved_errno;
    int repeats = info != NULL && info->si_code > 0
        && (signal_number == SIGSEGV || signal_number == SIGBUS || signal_number == SIGILL || signal_number == SIGFPE);
    if (!repeats) raise(signal_number);
}

void shardwork_crash_journal_install(int fd) {
    journal_fd = fd;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_fatal_signal;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    for (size_t index = 0; index < sizeof fatal_signals / sizeof fatal_signals[0]; index++) {
        int signal_number = fatal_signals[index];
        sigaction(signal_number, &action, &previous_actions[signal_number]);
    }
}

void shardwork_crash_context_swap(const char *context, size_t length, int phase,
                                  const char **previous_context, size_t *previous_length, int *previous_phase) {
    if (previous_context != NULL) *previous_context = current_context;
    if (previous_length != NULL) *previous_length = current_length;
    if (previous_phase != NULL) *previous_phase = current_phase;
    current_context = context;
    current_length = length;
    current_phase = phase;
}

/* ---- Thread names ---- */

int shardwork_name_current_thread(const char *name) {
    char cut[16];
    strncpy(cut, name, sizeof cut - 1);
    cut[sizeof cut - 1] = '\0';
    return pthread_setname_np(pthread_self(), cut);
}
