import CShardworkSupport

/// Names the calling thread as `top -H`, `ps -L` and `/proc/{pid}/task/{tid}/comm` show it.
///
/// Called by the thread itself, first thing: on Linux, Foundation's `Thread.name` set before
/// `start()` never reaches the kernel, and set from inside the thread it can run before `start()`
/// has stored the thread's handle and then names nothing; a new thread otherwise keeps its
/// creator's name (`oot.default-qos`, a pool thread's). Linux allows 15 bytes: a longer name is cut
/// there (which may split a multi-byte character; the names given here are ASCII).
package func nameCurrentThread(_ name: String) {
    _ = shardwork_name_current_thread(name)
}
