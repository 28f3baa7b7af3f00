//! `PageAlloc` as the process's global allocator, under the kind of use the operator makes of
//! it: growing and shrinking collections across the threshold, from several threads at once.

use std::collections::HashMap;

#[global_allocator]
static ALLOCATOR: daprs_page_alloc::PageAlloc = daprs_page_alloc::PageAlloc;

#[test]
fn collections_grow_and_shrink_across_the_threshold_from_many_threads() {
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            std::thread::spawn(move || {
                let mut map: HashMap<u32, Vec<u8>> = HashMap::new();
                for i in 0..2_000u32 {
                    // Sizes from a few bytes to ~40 KiB, grown one push at a time, so every
                    // realloc path runs (small->small, small->large, large->large).
                    let len = ((i * 7919 + t * 104_729) % 40_000) as usize;
                    let mut v = Vec::new();
                    for j in 0..len {
                        v.push((j as u32 ^ i ^ t) as u8);
                    }
                    if i % 3 == 0 {
                        v.truncate(len / 4);
                        v.shrink_to_fit();
                    }
                    map.insert(i % 64, v);
                }
                // Every surviving vector still holds what was written into it.
                for (k, v) in &map {
                    let i = (0..2_000u32).rev().find(|i| i % 64 == *k).unwrap_or(*k);
                    for (j, b) in v.iter().enumerate() {
                        assert_eq!(*b, (j as u32 ^ i ^ t) as u8, "thread {t} key {k} byte {j}");
                    }
                }
                map.len()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().expect("a thread panicked"), 64);
    }
}
