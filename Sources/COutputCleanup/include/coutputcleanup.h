#ifndef COUTPUTCLEANUP_H
#define COUTPUTCLEANUP_H
#include <stddef.h>

/// Cleanup of unfinished outputs when a signal ends the process, and one-line reports of inputs that
/// shrink while memory-mapped. Everything a handler does is async-signal-safe: paths, trash names and
/// rm's argument vector are prepared at registration, and removal runs `/bin/rm -rf` in a child made
/// with `_Fork` (no allocation, no locks in the handler).
///
/// Handlers are installed on first registration for SIGINT, SIGTERM, SIGHUP (unless ignored when the
/// process started), SIGBUS, SIGSEGV, SIGILL, SIGTRAP, SIGABRT and SIGFPE, and those signals are
/// unblocked in the registering thread (a parent may have left them blocked). Each one first renames every
/// registered temporary output to `PATH.removing` (so no writer thread can create a new file under
/// `PATH` any more) and removes it, then:
/// - SIGBUS at an address inside a registered mapping prints one line naming the mapped file and exits
///   with status 1;
/// - SIGINT, SIGTERM, SIGHUP restore the default action and re-raise, so the exit status still says which
///   signal ended the process;
/// - the other signals (and SIGBUS elsewhere) restore the handler that was installed before (the Swift
///   runtime's backtracer) and re-raise, so the crash is still reported; should that handler return,
///   the default action ends the process.

/// Creates the directory `path` (mode 0777 before umask) that a writer fills, registered to be removed
/// if a signal ends the process. Returns a slot for `oc_unregister_output`, or -1 with errno set (mkdir's
/// errno; ENAMETOOLONG; EMFILE when 64 outputs are registered). Once a handler has started it creates
/// nothing and blocks until the process ends, so no output appears after the handler's sweep.
/// Writers create files only by path inside it: after the handler's rename, no new file can land there.
int oc_create_output(const char *path);

/// Forgets the output in `slot` (no-op for -1).
void oc_unregister_output(int slot);

/// Registers `[base, base + size)` as a read-only mapping of `path`, so a SIGBUS there (the file shrank)
/// is reported by name. Returns a slot for `oc_unregister_mapping`, or -1 when the table is full.
int oc_register_mapping(const void *base, size_t size, const char *path);

/// Forgets the mapping in `slot` (no-op for -1).
void oc_unregister_mapping(int slot);

/// 1 once a handler is removing outputs to end the process (a writer's failure is then the signal's
/// doing, and the process is about to end).
int oc_signal_in_progress(void);

/// `renameat2` flags: fail with EEXIST instead of replacing; swap the two paths atomically.
#define OC_RENAME_NOREPLACE 1u
#define OC_RENAME_EXCHANGE 2u

/// `renameat2(AT_FDCWD, from, AT_FDCWD, to, flags)`: 0, or -1 with errno set.
int oc_rename(const char *from, const char *to, unsigned int flags);

#endif
