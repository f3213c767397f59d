//! Allocations per rendered script-mode message (issue 13: "a template
//! renders without per-message allocation beyond the message buffer
//! itself").
//!
//! Loads the `send` template of each example script with
//! `wsfault::load::script::load_script` and renders it 100 000 times under a
//! counting global allocator (this bench is single-threaded: every
//! allocation is the renderer's), with `{{conn}}`, `{{n}}`, `{{last_seq}}`,
//! `{{now_ms}}` and `{{uuid}}` changing on every render:
//!
//! - `Template::render` (what script mode sends: a new `String` of exactly
//!   the message's length, rendered through a reused scratch buffer) must
//!   allocate exactly once per message;
//! - `Template::render_into` into a reused buffer must not allocate at all.
//!
//! `cargo bench --bench template_alloc -- [--quick]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use wsfault::load::template::{Template, Vars};

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

struct Counting;

fn count(size: usize) {
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(size as u64, Ordering::Relaxed);
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The variables of render `i`: every placeholder changes, and the numbers
/// grow to realistic widths (connection up to 9 999, n up to 7 digits).
fn vars(i: u64) -> Vars {
    Vars {
        conn: (i % 10_000) as u32,
        n: 1_000_000 + i,
        last_seq: 2 * i,
        now_ms: 1_764_000_000_000 + i,
        uuid: u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834),
    }
}

/// Allocations and bytes counted while `f` runs, and its wall time.
fn counted(f: impl FnOnce()) -> (u64, u64, f64) {
    let a0 = ALLOCS.load(Ordering::Relaxed);
    let b0 = BYTES.load(Ordering::Relaxed);
    let t0 = Instant::now();
    f();
    let secs = t0.elapsed().as_secs_f64();
    (
        ALLOCS.load(Ordering::Relaxed) - a0,
        BYTES.load(Ordering::Relaxed) - b0,
        secs,
    )
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let renders: u64 = if quick { 20_000 } else { 100_000 };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    println!("## Allocations per rendered script-mode message\n");
    println!("Counting global allocator (single thread: every allocation is the renderer's); the `send` template of each example script, loaded with `load_script`, rendered {renders} times with every placeholder changing, after one warm-up render. `render` is what script mode sends (a new string of the message's length via a reused scratch buffer): target exactly 1 allocation per message; `render_into` into a reused buffer: target 0.\n");
    println!("| script | message bytes | call | renders | allocations | allocations/render | bytes allocated/render | ns/render | verdict |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut all_met = true;
    for file in [
        "examples/load/json-feed.yaml",
        "examples/load/socketio-chat.yaml",
        "examples/load/graphql-subscription.yaml",
    ] {
        let script = wsfault::load::script::load_script(&root.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let template: &Template = script
            .send
            .as_ref()
            .unwrap_or_else(|| panic!("{file}: no `send` template"));
        let mut scratch = String::new();
        // Warm-up: the scratch buffer grows to the longest message (every
        // number at its widest in the loop).
        let widest = Vars {
            conn: 9_999,
            ..vars(renders)
        };
        let len = template.render(&widest, &mut scratch).len();

        let (allocs, bytes, secs) = counted(|| {
            for i in 0..renders {
                black_box(template.render(black_box(&vars(i)), &mut scratch));
            }
        });
        let per = allocs as f64 / renders as f64;
        let met = allocs == renders;
        all_met &= met;
        println!(
            "| {file} | {len} | `render` | {renders} | {allocs} | {per:.4} | {:.1} | {:.0} | {} |",
            bytes as f64 / renders as f64,
            secs * 1e9 / renders as f64,
            if met { "met (= 1)" } else { "MISSED" }
        );

        let mut buf = String::new();
        template.render_into(&widest, &mut buf);
        let (allocs, bytes, secs) = counted(|| {
            for i in 0..renders {
                template.render_into(black_box(&vars(i)), &mut buf);
                black_box(&buf);
            }
        });
        let per = allocs as f64 / renders as f64;
        let met = allocs == 0;
        all_met &= met;
        println!(
            "| {file} | {len} | `render_into` (reused buffer) | {renders} | {allocs} | {per:.4} | {:.1} | {:.0} | {} |",
            bytes as f64 / renders as f64,
            secs * 1e9 / renders as f64,
            if met { "met (= 0)" } else { "MISSED" }
        );
    }
    println!(
        "\n- target: a template renders without per-message allocation beyond the message buffer itself — **{}**",
        if all_met { "met" } else { "MISSED" }
    );
}
