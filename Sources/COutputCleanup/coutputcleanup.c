#define _GNU_SOURCE
#include "coutputcleanup.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_OUTPUTS 64
#define MAX_MAPPINGS 1024
#define TRASH_SUFFIX ".removing"

struct output_slot {
    int used; /* written with release order after the strings, read with acquire order */
    char path[PATH_MAX];
    char trash[PATH_MAX + sizeof(TRASH_SUFFIX)];
};

struct mapping_slot {
    int used;
    uintptr_t base;
    size_t size;
    char path[PATH_MAX];
};

static struct output_slot outputs[MAX_OUTPUTS];
static struct mapping_slot mappings[MAX_MAPPINGS];
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static int handling;
/// Set once the first handler has removed the outputs: a handler on another thread (a second Ctrl-C,
/// or `timeout` signalling the process and then its group) waits for it before ending the process,
/// which would otherwise cut the removal short and leave the renamed output behind.
static int removed;
/// Registrations in progress: a handler waits for them to finish before it looks at the table, and a
/// registration that starts once a handler runs creates nothing (Dekker-style, sequentially consistent).
static int registering;
static const int handled_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGBUS, SIGSEGV, SIGILL, SIGTRAP, SIGABRT, SIGFPE};
#define SIGNAL_COUNT (sizeof(handled_signals) / sizeof(handled_signals[0]))
static struct sigaction previous[SIGNAL_COUNT];

static void write_all(const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, s, n);
        if (w <= 0) {
            if (w < 0 && errno == EINTR) continue;
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

/// Runs `/bin/rm -rf -- path` and waits for it (async-signal-safe).
static void remove_tree(char *path) {
    char *argv[] = {"rm", "-rf", "--", path, NULL};
    char *envp[] = {NULL};
    pid_t pid = _Fork();
    if (pid == 0) {
        execve("/bin/rm", argv, envp);
        _exit(127);
    }
    if (pid < 0) return;
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
}

/// Renames each registered output out of the writers' way, then removes it. A file a writer created
/// by path just before the rename can land after rm listed the directory: a few passes catch it.
static void remove_outputs(void) {
    for (int i = 0; i < MAX_OUTPUTS; i++) {
        struct output_slot *slot = &outputs[i];
        if (!__atomic_load_n(&slot->used, __ATOMIC_ACQUIRE)) continue;
        char *target = rename(slot->path, slot->trash) == 0 ? slot->trash : slot->path;
        struct stat st;
        for (int pass = 0; pass < 4 && lstat(target, &st) == 0; pass++) remove_tree(target);
        if (target == slot->trash && lstat(slot->path, &st) == 0) remove_tree(slot->path);
    }
}

static const char *mapped_file(const void *address) {
    uintptr_t a = (uintptr_t)address;
    for (int i = 0; i < MAX_MAPPINGS; i++) {
        struct mapping_slot *m = &mappings[i];
        if (__atomic_load_n(&m->used, __ATOMIC_ACQUIRE) && a >= m->base && a - m->base < m->size) return m->path;
    }
    return NULL;
}

/// Signals that end the process from outside (Ctrl-C, kill, a closed terminal, a reader of standard
/// output or error that went away, as `| head` does), not by a fault.
static int is_interrupt(int sig) { return sig == SIGINT || sig == SIGTERM || sig == SIGHUP || sig == SIGPIPE; }

static int signal_index(int sig) {
    for (size_t i = 0; i < SIGNAL_COUNT; i++) if (handled_signals[i] == sig) return (int)i;
    return -1;
}

static void handler(int sig, siginfo_t *info, void *context) {
    (void)context;
    const char *file = sig == SIGBUS && info ? mapped_file(info->si_addr) : NULL;
    if (__atomic_exchange_n(&handling, 1, __ATOMIC_SEQ_CST) == 0) {
        struct timespec pause_ms = {0, 1000000};
        for (int i = 0; i < 1000 && __atomic_load_n(&registering, __ATOMIC_SEQ_CST) != 0; i++) nanosleep(&pause_ms, NULL);
        remove_outputs();
        __atomic_store_n(&removed, 1, __ATOMIC_SEQ_CST);
    } else {
        // Another thread's handler is removing the outputs (this thread's own signals are blocked while
        // its handler runs, so it is not this one): wait for it, at most 30 s.
        struct timespec pause_ms = {0, 1000000};
        for (int i = 0; i < 30000 && __atomic_load_n(&removed, __ATOMIC_SEQ_CST) == 0; i++) nanosleep(&pause_ms, NULL);
    }
    if (file) {
        write_all(program_invocation_short_name);
        write_all(": ");
        write_all(file);
        write_all(" changed size while being read (SIGBUS); no output written\n");
        _exit(1);
    }
    int index = signal_index(sig);
    if (index >= 0) sigaction(sig, &previous[index], NULL);
    if (is_interrupt(sig)) signal(sig, SIG_DFL);
    // A fault re-executes the faulting instruction on return and meets the previous handler; anything
    // else (abort, int3, kill) is raised again, unblocked so it is delivered on return.
    if (info && info->si_code > 0 && (sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE)) return;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    raise(sig);
    // The previous handler returned (a crash reporter does, for a signal sent by kill or abort): the
    // outputs are gone, so the process must not go on; end it by the signal's default action.
    signal(sig, SIG_DFL);
    raise(sig);
    _exit(128 + sig);
}

static void install(void) {
    sigset_t unblock;
    sigemptyset(&unblock);
    for (size_t i = 0; i < SIGNAL_COUNT; i++) {
        int sig = handled_signals[i];
        if (sigaction(sig, NULL, &previous[i]) != 0) continue;
        // An interrupt ignored at start (nohup, a background job, a parent that ignores SIGPIPE) stays ignored.
        if (is_interrupt(sig) && !(previous[i].sa_flags & SA_SIGINFO) && previous[i].sa_handler == SIG_IGN) continue;
        struct sigaction action;
        memset(&action, 0, sizeof action);
        action.sa_sigaction = handler;
        action.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigfillset(&action.sa_mask);
        sigaction(sig, &action, NULL);
        sigaddset(&unblock, sig);
    }
    // A parent can leave signals blocked (Foundation's Process spawns from a thread where libdispatch
    // blocks them), and a blocked SIGINT or SIGTERM never reaches the handler: unblock them in this
    // thread (the main thread: the first mapping or output is registered there), which then takes them.
    pthread_sigmask(SIG_UNBLOCK, &unblock, NULL);
}

static int copy_path(char *dst, size_t capacity, const char *src) {
    size_t n = strlen(src);
    if (n + 1 > capacity) return 0;
    memcpy(dst, src, n + 1);
    return 1;
}

int oc_create_output(const char *path) {
    pthread_once(&install_once, install);
    if (strlen(path) + sizeof(TRASH_SUFFIX) > PATH_MAX) {
        errno = ENAMETOOLONG;
        return -1;
    }
    __atomic_add_fetch(&registering, 1, __ATOMIC_SEQ_CST);
    // A handler is ending the process: create nothing, and wait for the end.
    while (__atomic_load_n(&handling, __ATOMIC_SEQ_CST)) {
        __atomic_sub_fetch(&registering, 1, __ATOMIC_SEQ_CST);
        for (;;) pause();
    }
    int found = -1;
    pthread_mutex_lock(&table_lock);
    for (int i = 0; i < MAX_OUTPUTS && found < 0; i++) {
        struct output_slot *slot = &outputs[i];
        if (__atomic_load_n(&slot->used, __ATOMIC_ACQUIRE)) continue;
        found = i;
    }
    if (found < 0) {
        errno = EMFILE;
    } else if (mkdir(path, 0777) != 0) {
        found = -1;
    } else {
        struct output_slot *slot = &outputs[found];
        copy_path(slot->path, sizeof slot->path, path);
        copy_path(slot->trash, sizeof slot->trash, path);
        strcat(slot->trash, TRASH_SUFFIX);
        __atomic_store_n(&slot->used, 1, __ATOMIC_SEQ_CST);
    }
    pthread_mutex_unlock(&table_lock);
    __atomic_sub_fetch(&registering, 1, __ATOMIC_SEQ_CST);
    return found;
}

void oc_unregister_output(int slot) {
    if (slot < 0 || slot >= MAX_OUTPUTS) return;
    __atomic_store_n(&outputs[slot].used, 0, __ATOMIC_RELEASE);
}

int oc_register_mapping(const void *base, size_t size, const char *path) {
    pthread_once(&install_once, install);
    int found = -1;
    pthread_mutex_lock(&table_lock);
    for (int i = 0; i < MAX_MAPPINGS && found < 0; i++) {
        struct mapping_slot *m = &mappings[i];
        if (__atomic_load_n(&m->used, __ATOMIC_ACQUIRE)) continue;
        if (!copy_path(m->path, sizeof m->path, path)) break;
        m->base = (uintptr_t)base;
        m->size = size;
        __atomic_store_n(&m->used, 1, __ATOMIC_RELEASE);
        found = i;
    }
    pthread_mutex_unlock(&table_lock);
    return found;
}

void oc_unregister_mapping(int slot) {
    if (slot < 0 || slot >= MAX_MAPPINGS) return;
    __atomic_store_n(&mappings[slot].used, 0, __ATOMIC_RELEASE);
}

int oc_signal_in_progress(void) { return __atomic_load_n(&handling, __ATOMIC_SEQ_CST); }

int oc_rename(const char *from, const char *to, unsigned int flags) {
    return renameat2(AT_FDCWD, from, AT_FDCWD, to, flags);
}
