//! A bump allocator for plugin components.
//!
//! A plugin instance lives for exactly one call: the host builds a fresh instance, calls
//! one export and throws the instance away with its memory. Freeing inside a call is
//! therefore mostly wasted work, and a general-purpose allocator's bookkeeping (free
//! lists, coalescing, a `free` for each of the thousands of strings an input carries) is
//! a large part of a call. This allocator hands out memory by bumping a pointer through
//! chunks taken from `memory.grow`, gives back only the most recent allocation (the
//! common case of a temporary or a growing `Vec`), and grows that last allocation in
//! place.
//!
//! The cost: memory freed out of order is not reused within the call, so a plugin's peak
//! memory is what it allocates in total during one call. Plugins whose single call churns
//! through far more memory than it keeps can opt out with the SDK's `system-allocator`
//! feature.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::{Cell, UnsafeCell};

/// Size of a wasm page.
const PAGE: usize = 64 * 1024;
/// Memory taken from the host at once (more if one allocation needs it). Each
/// `memory.grow` is a host call that changes the protection of the whole chunk, and the
/// pooling allocator changes it back after the call, so a chunk much larger than a call
/// uses costs more than the extra calls a small one takes: 256 KiB took the RayCluster
/// plugin's new-cluster call from about 315 to 270 us against 1 MiB (`cargo bench -p
/// wasmray --bench runtime`, four alternating runs).
const CHUNK: usize = 4 * PAGE;

/// Memory the arena hands out before it first calls `memory.grow`. A zeroed static lies
/// in the module's initial memory (wasm-ld emits no data segment for it), so a call that
/// stays within it never grows its memory. Growing is what costs: the pooling allocator
/// must open the new pages for access and close them again after the call, one
/// `mprotect` each way plus TLB shootdowns.
const RESERVE: usize = 2 << 20;

/// The reserve's storage.
struct Reserve(UnsafeCell<[u8; RESERVE]>);

// SAFETY: a wasm32 component instance runs one thread (wasm32-wasip2 has no threads), so
// the storage is never reached from two threads; the arena only ever takes its address.
unsafe impl Sync for Reserve {}

static RESERVE_STORAGE: Reserve = Reserve(UnsafeCell::new([0; RESERVE]));

/// The allocator; install it with `#[global_allocator]`.
pub struct CallArena {
    /// Next free byte of the current chunk.
    next: Cell<usize>,
    /// End of the current chunk.
    end: Cell<usize>,
}

impl CallArena {
    /// An empty arena: the first allocation takes the first chunk.
    pub const fn new() -> Self {
        CallArena {
            next: Cell::new(0),
            end: Cell::new(0),
        }
    }

    /// Takes a new chunk of at least `bytes`: the reserve the first time if it is large
    /// enough, then memory from the host; its start, or none if the memory cannot grow.
    fn grow(&self, bytes: usize) -> Option<usize> {
        if self.end.get() == 0 && bytes <= RESERVE {
            let start = RESERVE_STORAGE.0.get() as usize;
            self.next.set(start);
            self.end.set(start + RESERVE);
            return Some(start);
        }
        let pages = bytes.max(CHUNK).div_ceil(PAGE);
        let previous = core::arch::wasm32::memory_grow(0, pages);
        if previous == usize::MAX {
            return None;
        }
        let start = previous.checked_mul(PAGE)?;
        self.next.set(start);
        self.end.set(start.checked_add(pages.checked_mul(PAGE)?)?);
        Some(start)
    }

    /// Bumps out `layout` from the current chunk, taking a new chunk if it does not fit.
    fn bump(&self, layout: Layout) -> Option<usize> {
        let fits = |next: usize| {
            let start = next.checked_next_multiple_of(layout.align())?;
            let end = start.checked_add(layout.size())?;
            (end <= self.end.get()).then_some((start, end))
        };
        let (start, end) = match fits(self.next.get()) {
            Some(range) => range,
            None => {
                // A fresh chunk starts page-aligned, which covers every alignment up to
                // a page; larger alignments need the slack.
                let slack = layout.align().saturating_sub(PAGE);
                let start = self.grow(layout.size().checked_add(slack)?)?;
                fits(start)?
            }
        };
        self.next.set(end);
        Some(start)
    }
}

impl Default for CallArena {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: a wasm32 component instance runs one thread, so the `Cell`s are never touched
// concurrently (wasm32-wasip2 has no threads).
unsafe impl Sync for CallArena {}

// SAFETY: every pointer returned lies in linear memory obtained from `memory.grow` and
// handed out once: `bump` only moves forward within a chunk it owns, and the only rewind
// (in `dealloc`/`realloc`) releases the block that ends exactly at `next`, which no other
// live allocation can overlap. Alignment is applied before the size check. Null is
// returned when memory cannot grow, as `GlobalAlloc` requires.
unsafe impl GlobalAlloc for CallArena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.bump(layout)
            .map_or(std::ptr::null_mut(), |addr| addr as *mut u8)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // Fresh pages from `memory.grow` are zero, but a rewound block may not be.
        let ptr = unsafe { self.alloc(layout) };
        if !ptr.is_null() {
            // SAFETY: `ptr` is valid for `layout.size()` bytes, just allocated.
            unsafe { ptr.write_bytes(0, layout.size()) };
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Only the most recent allocation can be given back.
        if ptr as usize + layout.size() == self.next.get() {
            self.next.set(ptr as usize);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let start = ptr as usize;
        let last = start + layout.size() == self.next.get();
        if last
            && let Some(end) = start.checked_add(new_size)
            && end <= self.end.get()
        {
            // The last allocation grows or shrinks in place.
            self.next.set(end);
            return ptr;
        }
        if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: `new_size` with the old alignment is a valid layout (the caller
        // guarantees it does not overflow `isize` once rounded).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let new_ptr = unsafe { self.alloc(new_layout) };
        if !new_ptr.is_null() {
            // SAFETY: both blocks are valid for `layout.size()` bytes and distinct (the
            // new one was bumped past the end of every live block).
            unsafe { std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size()) };
        }
        new_ptr
    }
}
