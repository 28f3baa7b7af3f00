//! A global allocator for servers that hold many mostly idle connections.
//!
//! Each HTTP/2-over-TLS connection keeps a few fixed library buffers (h2's 16 KiB write
//! buffer, tokio-util's 8 KiB read buffer) whose tails are rarely written. In the system
//! allocator those buffers share pages with their neighbours and carry headers at both ends,
//! so most of their pages become resident anyway. [`PageAlloc`] gives every allocation of at
//! least [`THRESHOLD`] bytes its own anonymous mapping instead, as glibc's `M_MMAP_THRESHOLD`
//! does, but without a header: a page that is never written is never resident. Smaller
//! allocations go to [`System`].
//!
//! The price is a system call for each large allocation and each free of one, so this suits
//! a process whose large buffers live long (the operator's connections), not one that
//! allocates large buffers per request.
//!
//! Only Linux takes the mapping path; elsewhere [`PageAlloc`] is [`System`].
//!
//! If `mmap` fails (for example at the `vm.max_map_count` limit), the allocation falls back
//! to [`System`] at a 16-byte offset from a 4 KiB boundary. Mappings are always page-aligned,
//! so `dealloc` tells the two apart by the address alone.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations of at least this many bytes get their own mapping.
pub const THRESHOLD: usize = 4 * 1024;

/// See the crate documentation.
pub struct PageAlloc;

/// The alignment the mapping path serves; larger alignments go to [`System`].
const MAX_ALIGN: usize = 16;
/// The fallback's address is `FALLBACK_OFFSET` past a `BOUNDARY`-aligned block.
const BOUNDARY: usize = 4096;
const FALLBACK_OFFSET: usize = 16;

/// Whether a block of this layout takes the mapping path (or its fallback).
fn is_large(layout: &Layout) -> bool {
    cfg!(target_os = "linux") && layout.size() >= THRESHOLD && layout.align() <= MAX_ALIGN
}

/// Whether a large block came from `mmap` (page-aligned) rather than the fallback.
fn is_mapping(ptr: *mut u8) -> bool {
    (ptr as usize).is_multiple_of(BOUNDARY)
}

fn fallback_layout(size: usize) -> Option<Layout> {
    Layout::from_size_align(size.checked_add(FALLBACK_OFFSET)?, BOUNDARY).ok()
}

/// A large block of `size` bytes: a fresh mapping, or the fallback when `mmap` fails.
#[allow(unsafe_code)]
unsafe fn map(size: usize) -> *mut u8 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: an anonymous private mapping of `size` (> 0) bytes touches no existing memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            return p.cast();
        }
    }
    // SAFETY: forwarded; `size` is not zero.
    unsafe { fallback_alloc(size) }
}

/// The fallback block: `size` bytes from [`System`], never page-aligned.
#[allow(unsafe_code)]
unsafe fn fallback_alloc(size: usize) -> *mut u8 {
    let Some(layout) = fallback_layout(size) else {
        return std::ptr::null_mut();
    };
    // SAFETY: `layout` has a non-zero size.
    let block = unsafe { System.alloc(layout) };
    if block.is_null() {
        return block;
    }
    // SAFETY: the block is `size + FALLBACK_OFFSET` bytes long.
    unsafe { block.add(FALLBACK_OFFSET) }
}

/// Frees what [`map`] returned for `size` bytes.
#[allow(unsafe_code)]
unsafe fn unmap(ptr: *mut u8, size: usize) {
    if is_mapping(ptr) {
        #[cfg(target_os = "linux")]
        // SAFETY: `ptr` is page-aligned, so `map` got it from `mmap` with this `size`.
        unsafe {
            libc::munmap(ptr.cast(), size);
        }
    } else if let Some(layout) = fallback_layout(size) {
        // SAFETY: `ptr` is not page-aligned, so `map` got it from `System` with this layout.
        unsafe { System.dealloc(ptr.sub(FALLBACK_OFFSET), layout) }
    }
}

#[allow(unsafe_code)]
// SAFETY: every block is either a fresh mapping or comes from `System`, and `dealloc` and
// `realloc` route each pointer back to where it came from by the same rule (`is_large` of its
// layout, then the address).
unsafe impl GlobalAlloc for PageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(&layout) {
            // SAFETY: the size is at least the threshold, so not zero.
            unsafe { map(layout.size()) }
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(&layout) {
            // SAFETY: as in `alloc`.
            let p = unsafe { map(layout.size()) };
            if !p.is_null() && !is_mapping(p) {
                // A fallback block is not zeroed; a fresh mapping is.
                // SAFETY: `p` points to `layout.size()` writable bytes.
                unsafe { p.write_bytes(0, layout.size()) };
            }
            p
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_large(&layout) {
            // SAFETY: `alloc` mapped `ptr` for this size.
            unsafe { unmap(ptr, layout.size()) }
        } else {
            // SAFETY: `alloc` got `ptr` from `System` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (is_large(&layout), is_large(&new_layout)) {
            // SAFETY: both small: `System` owns the block.
            (false, false) => unsafe { System.realloc(ptr, layout, new_size) },
            #[cfg(target_os = "linux")]
            (true, true) if is_mapping(ptr) => {
                // SAFETY: `ptr` is a mapping of `layout.size()` bytes; MREMAP_MAYMOVE keeps
                // its contents and unmaps the old range when it moves.
                let p = unsafe {
                    libc::mremap(ptr.cast(), layout.size(), new_size, libc::MREMAP_MAYMOVE)
                };
                if p == libc::MAP_FAILED {
                    // SAFETY: as the general case below.
                    unsafe { self.move_to(ptr, layout, new_layout) }
                } else {
                    p.cast()
                }
            }
            // SAFETY: the block moves to where `new_layout` belongs.
            _ => unsafe { self.move_to(ptr, layout, new_layout) },
        }
    }
}

impl PageAlloc {
    /// Reallocates by allocating, copying and freeing.
    #[allow(unsafe_code)]
    unsafe fn move_to(&self, ptr: *mut u8, old: Layout, new: Layout) -> *mut u8 {
        // SAFETY: `new` has a non-zero size (the caller's realloc contract).
        let fresh = unsafe { self.alloc(new) };
        if !fresh.is_null() {
            // SAFETY: both blocks are valid for the smaller size and do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, fresh, old.size().min(new.size()));
                self.dealloc(ptr, old);
            }
        }
        fresh
    }
}

#[cfg(test)]
#[allow(unsafe_code, clippy::undocumented_unsafe_blocks, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    /// Fills `len` bytes with a pattern that depends on the position.
    unsafe fn fill(p: *mut u8, len: usize) {
        for i in 0..len {
            unsafe { p.add(i).write((i % 251) as u8) };
        }
    }

    unsafe fn check(p: *const u8, len: usize) {
        for i in 0..len {
            assert_eq!(unsafe { p.add(i).read() }, (i % 251) as u8, "byte {i}");
        }
    }

    #[test]
    fn blocks_of_every_size_and_alignment_round_trip() {
        for size in [1, 16, 4095, 4096, 4097, 16 * 1024, 1 << 20] {
            for align in [1, 8, 16, 32, 4096] {
                let l = layout(size, align);
                let p = unsafe { PageAlloc.alloc(l) };
                assert!(!p.is_null(), "size {size} align {align}");
                assert!(
                    (p as usize).is_multiple_of(align),
                    "size {size} align {align}"
                );
                unsafe {
                    fill(p, size);
                    check(p, size);
                    PageAlloc.dealloc(p, l);
                }
            }
        }
    }

    #[test]
    fn large_blocks_are_their_own_page_aligned_mappings() {
        let l = layout(THRESHOLD, 8);
        let p = unsafe { PageAlloc.alloc(l) };
        assert!(is_mapping(p), "a large block starts on a page");
        unsafe { PageAlloc.dealloc(p, l) };
        // Just under the threshold stays with the system allocator, which puts a header first.
        let small = layout(THRESHOLD - 1, 8);
        let q = unsafe { PageAlloc.alloc(small) };
        assert!(!is_mapping(q), "a small block is the system allocator's");
        unsafe { PageAlloc.dealloc(q, small) };
    }

    #[test]
    fn zeroed_blocks_are_zero() {
        for size in [64, THRESHOLD, 64 * 1024] {
            let l = layout(size, 16);
            let p = unsafe { PageAlloc.alloc_zeroed(l) };
            let bytes = unsafe { std::slice::from_raw_parts(p, size) };
            assert!(bytes.iter().all(|b| *b == 0), "size {size}");
            unsafe { PageAlloc.dealloc(p, l) };
        }
    }

    #[test]
    fn realloc_keeps_the_contents_across_the_threshold() {
        // small -> small -> large (copy) -> larger (mremap) -> smaller large -> small (copy)
        let sizes = [100, 3000, 5000, 200_000, 9000, 200];
        let mut l = layout(sizes[0], 8);
        let mut p = unsafe { PageAlloc.alloc(l) };
        unsafe { fill(p, sizes[0]) };
        for pair in sizes.windows(2) {
            let (old, new) = (pair[0], pair[1]);
            p = unsafe { PageAlloc.realloc(p, l, new) };
            assert!(!p.is_null(), "{old} -> {new}");
            unsafe { check(p, old.min(new)) };
            unsafe { fill(p, new) };
            l = layout(new, 8);
        }
        unsafe { PageAlloc.dealloc(p, l) };
    }

    #[test]
    fn the_fallback_is_never_page_aligned_and_is_freed_by_dealloc() {
        for size in [THRESHOLD, 3 * BOUNDARY, 100_000] {
            let p = unsafe { fallback_alloc(size) };
            assert!(!p.is_null());
            assert!(
                !is_mapping(p),
                "a fallback block must not look like a mapping"
            );
            unsafe {
                fill(p, size);
                check(p, size);
                // What `dealloc` does with a large layout: routes it back to `System`.
                PageAlloc.dealloc(p, layout(size, 16));
            }
        }
    }

    /// The point of the crate: pages of a large block that are never written are not
    /// resident. `mincore` reports residency page by page.
    #[cfg(target_os = "linux")]
    #[test]
    fn untouched_pages_of_a_large_block_cost_no_memory() {
        let page = 4096;
        let pages = 16;
        let l = layout(pages * page, 8);
        let p = unsafe { PageAlloc.alloc(l) };
        // Write the first byte and one byte of the third page.
        unsafe {
            p.write(1);
            p.add(2 * page).write(1);
        }
        let mut resident = vec![0u8; pages];
        let rc = unsafe { libc::mincore(p.cast(), pages * page, resident.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        let touched: Vec<usize> = (0..pages).filter(|i| resident[*i] & 1 == 1).collect();
        assert_eq!(touched, vec![0, 2], "only the written pages are resident");
        unsafe { PageAlloc.dealloc(p, l) };
    }
}
