//! Giving memory back after a configuration shrinks.
//!
//! A large configuration leaves many small freed blocks behind when it is
//! replaced (a histogram per path, about 18 KiB each): glibc keeps them in
//! its heap, so the process would stay at its peak size for good. After a
//! reconfiguration or a publication that freed a lot, the engine asks the
//! allocator to return free pages to the kernel. musl's allocator returns
//! freed pages by itself, so there it is a no-op.

/// Returns the allocator's free pages to the kernel (glibc's `malloc_trim`).
pub fn release_free_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
