//! `bench-stage2`: the host half of the stage-2 benchmark, run by `cargo xtask bench stage2`.
//!
//! It measures how fast the portable stage-2 walker (`kcore::stage2::map_page`) resolves
//! faults when one and two threads fault into one shared tree at the same time: once
//! lock-free, as the walker is meant to run, and once with every fault under one global
//! `Mutex` (the baseline: a kernel that serialises stage-2 updates behind a big lock).
//! A "fault" is what the kernel's fault path does once it has found the backing page: map
//! one 4 KiB page at the faulting IPA, installing any missing level-2/level-3 table on
//! the way.
//!
//! Why a separate binary: `cargo xtask` builds and runs xtask in the dev profile
//! (unoptimised), which would measure the debug build of the walker. xtask runs this
//! binary with `cargo run --release --bin bench-stage2` instead, so the walker is
//! optimised the way the kernel builds it, and only this small binary (and the crates
//! xtask depends on, once) is built in release: the xtask binary itself stays a debug
//! build. It can also be run by hand: `cargo run --release -p xtask --bin bench-stage2`.
//!
//! Output: one `FIGURE <name> <value> <unit>` line per figure and `NOTE <text>` lines on
//! stdout, for xtask to parse; progress and the per-round figures on stderr.
#![forbid(unsafe_code)]

use std::ops::Range;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use kcore::addr::{Ipa, PhysAddr, PAGE_SIZE};
use kcore::stage2::{self, MemType, Perms, TableAlloc, TableMem, ENTRIES};

/// Fake physical address of the arena's first table (the 8 KiB root); 8 KiB aligned and
/// within the 48 bits a descriptor's output address holds.
const ARENA_BASE: u64 = 0x80_0000_0000;
/// First IPA faulted on (where QEMU virt's guest RAM starts).
const IPA_BASE: u64 = 0x4000_0000;
/// Fake physical address backing `IPA_BASE`.
const BACKING_BASE: u64 = 0x1_0000_0000;
/// Tables a thread takes from the shared arena at a time.
const CHUNK: usize = 64;
/// How the threads share out the pages: each takes runs of this many consecutive pages in
/// turn. The headline figures use runs of 512 pages (2 MiB, one level-3 table): the threads
/// fault into the same tree and the same level-2 tables, and race to install neighbouring
/// level-2 entries, but each level-3 table is filled by one thread, as when vCPUs fault in
/// their own memory. Two more lock-free runs show finer sharing: runs of 16 pages, where
/// the threads fill the same level-3 tables (each its own 64-byte lines of them), and runs
/// of 1 page, where they write neighbouring entries of the same lines. On the machines
/// measured so far, two cores writing into the same 4 KiB pages scale worse with or
/// without the walker (plain compare-and-swaps into zeroed memory in the same pattern do
/// too), so these two show the memory system as much as the walker.
const RUN_REGION: u64 = ENTRIES as u64;
/// See `RUN_REGION`.
const RUN_LINES: u64 = 16;
/// See `RUN_REGION`.
const RUN_ADJACENT: u64 = 1;

/// Table memory: 4 KiB tables in one vector of atomic entries; tables 0 and 1 are the
/// concatenated root.
struct Arena {
    ptes: Vec<AtomicU64>,
    tables: usize,
    /// Next table never handed out (the root is never handed out).
    next: AtomicUsize,
}

impl Arena {
    /// An arena of `tables` tables, every entry written once so that the host's own page
    /// faults on the memory happen here and not during a measurement.
    fn new(tables: usize) -> Arena {
        let ptes: Vec<AtomicU64> = (0..tables * ENTRIES).map(|_| AtomicU64::new(0)).collect();
        for p in &ptes {
            p.store(0, Ordering::Relaxed);
        }
        Arena {
            ptes,
            tables,
            next: AtomicUsize::new(2),
        }
    }

    fn root(&self) -> PhysAddr {
        PhysAddr(ARENA_BASE)
    }

    fn table(i: usize) -> PhysAddr {
        PhysAddr(ARENA_BASE + i as u64 * PAGE_SIZE)
    }

    /// Zeroes every table used so far and takes them all back.
    fn reset(&mut self) {
        let used = (*self.next.get_mut()).min(self.tables);
        for p in &mut self.ptes[..used * ENTRIES] {
            *p.get_mut() = 0;
        }
        *self.next.get_mut() = 2;
    }

    /// Up to `n` fresh tables (indices), `None` once the arena is exhausted.
    fn grab(&self, n: usize) -> Option<Range<usize>> {
        let start = self.next.fetch_add(n, Ordering::Relaxed);
        (start < self.tables).then(|| start..(start + n).min(self.tables))
    }

    /// Tables handed out so far.
    fn used(&self) -> usize {
        self.next.load(Ordering::Relaxed).min(self.tables) - 2
    }
}

impl TableMem for Arena {
    fn pte(&self, table: PhysAddr, index: usize) -> &AtomicU64 {
        &self.ptes[((table.0 - ARENA_BASE) / 8) as usize + index]
    }
}

/// One thread's table allocator: chunks of the shared arena, so that allocating is not
/// itself a shared bottleneck, and a local list of tables that lost an install race
/// (still zero: they were never linked).
struct Tables<'a> {
    arena: &'a Arena,
    chunk: Range<usize>,
    spare: Vec<PhysAddr>,
}

impl<'a> Tables<'a> {
    fn new(arena: &'a Arena) -> Tables<'a> {
        Tables {
            arena,
            chunk: 0..0,
            spare: Vec::new(),
        }
    }
}

impl TableAlloc for Tables<'_> {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        if let Some(t) = self.spare.pop() {
            return Some(t);
        }
        if self.chunk.is_empty() {
            self.chunk = self.arena.grab(CHUNK)?;
        }
        self.chunk.next().map(Arena::table)
    }

    fn free_table(&mut self, table: PhysAddr) {
        self.spare.push(table);
    }
}

/// The two walkers compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// `map_page` as it is: compare-and-swap installs, no lock.
    LockFree,
    /// Every fault holds one global lock around `map_page`.
    GlobalLock,
}

/// One measured configuration.
#[derive(Clone, Copy, Debug)]
struct Config {
    variant: Variant,
    threads: usize,
    /// Pages a thread faults in a row (see `RUN_REGION`).
    run: u64,
}

/// The page number of the `k`th fault of thread `t` of `threads`, each thread taking
/// runs of `run` consecutive pages in turn.
fn page_of(t: u64, threads: u64, run: u64, k: u64) -> u64 {
    let (r, i) = (k / run, k % run);
    (r * threads + t) * run + i
}

fn ipa_of(page: u64) -> Ipa {
    Ipa(IPA_BASE + page * PAGE_SIZE)
}

fn backing_of(page: u64) -> PhysAddr {
    PhysAddr(BACKING_BASE + page * PAGE_SIZE)
}

/// Faults `count` pages as thread `t`; returns when it started, when it finished, and how
/// many faults failed.
fn worker(
    arena: &Arena,
    lock: &Mutex<()>,
    cfg: Config,
    t: usize,
    count: u64,
) -> (Instant, Instant, u64) {
    let mut tables = Tables::new(arena);
    let mut failed = 0;
    let start = Instant::now();
    for k in 0..count {
        let page = page_of(t as u64, cfg.threads as u64, cfg.run, k);
        let fault = |tables: &mut Tables| {
            stage2::map_page(
                arena,
                arena.root(),
                ipa_of(page),
                backing_of(page),
                Perms::RW,
                MemType::Normal,
                tables,
            )
        };
        let r = match cfg.variant {
            Variant::LockFree => fault(&mut tables),
            Variant::GlobalLock => {
                let _held = lock.lock().unwrap_or_else(PoisonError::into_inner);
                fault(&mut tables)
            }
        };
        failed += u64::from(r.is_err());
    }
    (start, Instant::now(), failed)
}

/// Runs `faults` faults (split evenly between the threads) into a fresh tree; returns
/// faults per second and, where the machine says, how much CPU time others took meanwhile.
fn measure(
    arena: &mut Arena,
    cfg: Config,
    faults: u64,
) -> Result<(f64, Option<Interference>), String> {
    arena.reset();
    let before = Ticks::now();
    let per_thread = faults / cfg.threads as u64;
    let total = per_thread * cfg.threads as u64;
    let lock = Mutex::new(());
    let ready = AtomicUsize::new(0);
    let arena_ref = &*arena;
    let results: Vec<(Instant, Instant, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..cfg.threads)
            .map(|t| {
                let (lock, ready) = (&lock, &ready);
                s.spawn(move || {
                    // Start together. A spinning (not sleeping) barrier keeps every
                    // thread's CPU awake, so none starts late out of an idle state.
                    ready.fetch_add(1, Ordering::AcqRel);
                    while ready.load(Ordering::Acquire) < cfg.threads {
                        std::hint::spin_loop();
                        std::thread::yield_now();
                    }
                    worker(arena_ref, lock, cfg, t, per_thread)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a benchmark thread panicked"))
            .collect()
    });
    let start = results.iter().map(|r| r.0).min().expect("no threads");
    let end = results.iter().map(|r| r.1).max().expect("no threads");
    let after = Ticks::now();
    let failed: u64 = results.iter().map(|r| r.2).sum();
    if failed != 0 {
        return Err(format!("{cfg:?}: {failed} of {total} faults failed"));
    }
    check(arena_ref, cfg, per_thread, 4099)?;
    let secs = end.duration_since(start).max(Duration::from_nanos(1));
    let interference = before.zip(after).map(|(b, a)| Interference {
        others: a
            .busy
            .saturating_sub(b.busy)
            .saturating_sub(a.own.saturating_sub(b.own)) as f64
            / TICKS_PER_SEC,
        steal: a.steal.saturating_sub(b.steal) as f64 / TICKS_PER_SEC,
        wall: secs.as_secs_f64(),
    });
    Ok((total as f64 / secs.as_secs_f64(), interference))
}

/// How long into the run a disturbed measurement may still be taken again.
const RETRY_WINDOW: Duration = Duration::from_secs(12);

/// `USER_HZ`, the unit of `/proc/stat` (100 on Linux everywhere that matters).
const TICKS_PER_SEC: f64 = 100.0;

/// Clock ticks of CPU time, from `/proc`: all CPUs' busy time, the time the hypervisor
/// took from them (steal), and this process's own.
#[derive(Clone, Copy, Debug)]
struct Ticks {
    busy: u64,
    steal: u64,
    own: u64,
}

impl Ticks {
    /// `None` where `/proc` does not tell (not Linux).
    fn now() -> Option<Ticks> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal ...
        let busy = cpu.get(..3)?.iter().sum::<u64>() + cpu.get(5..7)?.iter().sum::<u64>();
        let me = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces): state is field 3,
        // utime and stime fields 14 and 15.
        let f: Vec<&str> = me.rsplit_once(')')?.1.split_whitespace().collect();
        let own = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(Ticks {
            busy,
            steal: cpu.get(7).copied().unwrap_or(0),
            own,
        })
    }
}

/// CPU time others took while a measurement ran.
#[derive(Clone, Copy, Debug)]
struct Interference {
    /// CPU-seconds of other processes (and the kernel on their behalf).
    others: f64,
    /// CPU-seconds the hypervisor took from this machine's CPUs.
    steal: f64,
    /// Length of the measurement, seconds.
    wall: f64,
}

impl Interference {
    /// Whether others took enough to disturb the figure: a tenth of one CPU over the
    /// measurement, and more than the tick counters' own jitter.
    fn disturbed(&self) -> bool {
        self.others + self.steal > (0.1 * self.wall).max(0.05)
    }
}

/// Checks that every `step`th fault of each thread (and its last one) left its page
/// mapped to its backing page.
fn check(arena: &Arena, cfg: Config, per_thread: u64, step: u64) -> Result<(), String> {
    for t in 0..cfg.threads as u64 {
        for k in (0..per_thread)
            .step_by(step as usize)
            .chain([per_thread - 1])
        {
            let page = page_of(t, cfg.threads as u64, cfg.run, k);
            let got = stage2::translate(arena, arena.root(), ipa_of(page));
            if got != Some((backing_of(page), Perms::RW)) {
                return Err(format!("page {page}: translates to {got:?}"));
            }
        }
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Tables needed for `faults` consecutive pages (level 3 and level 2), with room for the
/// chunks threads hold and the few tables that lost install races and wait for reuse.
fn tables_for(faults: u64, threads: usize) -> usize {
    let l3 = faults.div_ceil(ENTRIES as u64) as usize;
    let l2 = faults.div_ceil((ENTRIES * ENTRIES) as u64) as usize;
    2 + l3 + l2 + 2 * threads * CHUNK + 16
}

struct Options {
    faults: u64,
    rounds: usize,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        faults: 24 << 20,
        rounds: 5,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match a.as_str() {
            "--faults" => o.faults = value("--faults")?.max(1024),
            "--rounds" => o.rounds = value("--rounds")?.max(1) as usize,
            _ => {
                return Err(format!(
                    "unknown argument `{a}` (usage: bench-stage2 [--faults N] [--rounds N])"
                ))
            }
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-stage2: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let o = options()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // (figure name, variant, threads, run)
    let configs = [
        ("lockfree-1t", Variant::LockFree, 1, RUN_REGION),
        ("lockfree-2t", Variant::LockFree, 2, RUN_REGION),
        ("lock-1t", Variant::GlobalLock, 1, RUN_REGION),
        ("lock-2t", Variant::GlobalLock, 2, RUN_REGION),
        ("lockfree-2t-shared-l3", Variant::LockFree, 2, RUN_LINES),
        ("lockfree-2t-adjacent", Variant::LockFree, 2, RUN_ADJACENT),
    ];
    let mut arena = Arena::new(tables_for(o.faults, 2));
    eprintln!(
        "bench-stage2: {} faults per measurement, {} rounds, {cpus} CPU(s) available",
        o.faults, o.rounds
    );
    // Warm-up, not counted: code, caches, the CPU's clock.
    let warm = Config {
        variant: Variant::LockFree,
        threads: 1,
        run: RUN_REGION,
    };
    measure(&mut arena, warm, o.faults / 4)?;
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let (mut retried, mut kept_disturbed) = (0, 0);
    let began = Instant::now();
    for round in 0..o.rounds {
        // Alternate the order from round to round so that drift (clock, other load)
        // does not always favour the same configuration.
        let order: Vec<usize> = if round % 2 == 0 {
            (0..configs.len()).collect()
        } else {
            (0..configs.len()).rev().collect()
        };
        for i in order {
            let (_, variant, threads, run) = configs[i];
            let cfg = Config {
                variant,
                threads,
                run,
            };
            // A measurement that other load disturbed is taken again, twice at most and
            // only while the whole run is young: under sustained load retrying would not
            // help, and the run must stay short.
            let mut tries = 0;
            let rate = loop {
                let (rate, interference) = measure(&mut arena, cfg, o.faults)?;
                let disturbed = interference.filter(Interference::disturbed);
                if let Some(x) = disturbed {
                    eprintln!(
                        "bench-stage2: {}: others took {:.2} CPU-seconds (steal {:.2}) \
                         during its {:.2} s",
                        configs[i].0, x.others, x.steal, x.wall
                    );
                }
                let disturbed = disturbed.is_some();
                tries += 1;
                if !disturbed || tries == 3 || began.elapsed() > RETRY_WINDOW {
                    kept_disturbed += usize::from(disturbed);
                    break rate;
                }
                retried += 1;
            };
            rates[i].push(rate);
        }
    }
    eprintln!(
        "bench-stage2: arena used {} tables of {}",
        arena.used(),
        arena.tables
    );
    let mut medians = Vec::new();
    for ((name, ..), r) in configs.iter().zip(&mut rates) {
        let shown: Vec<String> = r.iter().map(|x| format!("{:.2}", x / 1e6)).collect();
        eprintln!(
            "bench-stage2: {name:<21} M faults/s per round: {}",
            shown.join(" ")
        );
        medians.push(median(r));
    }
    let fig = |name: &str, value: f64, unit: &str| {
        println!("FIGURE stage2-host-{name} {value} {unit}");
    };
    fig("cpus", cpus as f64, "CPUs");
    for ((name, ..), m) in configs.iter().zip(&medians) {
        fig(name, m.round(), "faults/s");
    }
    // Ratios of the medians, to two decimals.
    let ratio = |a: usize, b: usize| (medians[a] / medians[b] * 100.0).round() / 100.0;
    fig("lockfree-scaling", ratio(1, 0), "x");
    fig("lock-scaling", ratio(3, 2), "x");
    fig("lockfree-over-lock-1t", ratio(0, 2), "x");
    fig("lockfree-over-lock-2t", ratio(1, 3), "x");
    fig("lockfree-shared-l3-scaling", ratio(4, 0), "x");
    fig("lockfree-adjacent-scaling", ratio(5, 0), "x");
    if retried > 0 {
        eprintln!("bench-stage2: {retried} measurement(s) taken again: other load disturbed them");
    }
    if kept_disturbed > 0 {
        println!(
            "NOTE {kept_disturbed} of {} measurements disturbed by other load: figures \
             may be low, the 2-thread ones most",
            o.rounds * configs.len()
        );
    }
    if cpus < 2 {
        println!(
            "NOTE only {cpus} CPU: the 2 threads take turns on it, so the 2-thread \
             figures and the scaling ratios are not meaningful"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_take_disjoint_runs_that_cover_every_page() {
        for (threads, run) in [(1, 1), (2, 1), (2, 16), (3, 4)] {
            let mut seen = [false; 96];
            for t in 0..threads {
                for k in 0..96 / threads {
                    let p = page_of(t, threads, run, k) as usize;
                    assert!(!seen[p], "page {p} twice");
                    seen[p] = true;
                }
            }
            assert!(seen.iter().all(|&s| s), "{threads} threads, runs of {run}");
        }
        assert_eq!(page_of(1, 2, 16, 0), 16);
        assert_eq!(page_of(0, 2, 16, 16), 32);
    }

    #[test]
    fn every_configuration_maps_every_page() {
        let faults = 3 * ENTRIES as u64 + 40;
        let mut arena = Arena::new(tables_for(faults, 2));
        for variant in [Variant::LockFree, Variant::GlobalLock] {
            for (threads, run) in [(1, RUN_REGION), (2, RUN_REGION), (2, 16), (2, 1)] {
                let cfg = Config {
                    variant,
                    threads,
                    run,
                };
                let (rate, _) = measure(&mut arena, cfg, faults).unwrap();
                assert!(rate > 0.0);
                check(&arena, cfg, faults / threads as u64, 1).unwrap();
                // The tree holds four level-3 tables and one level-2 table; the threads
                // take no more than a chunk each.
                assert!(arena.used() <= threads * CHUNK);
            }
        }
    }

    #[test]
    fn allocator_reuses_race_losers_and_reports_exhaustion() {
        let arena = Arena::new(2 + 3);
        let mut t = Tables::new(&arena);
        let a = t.alloc_table().unwrap();
        t.free_table(a);
        assert_eq!(t.alloc_table(), Some(a));
        assert!(t.alloc_table().is_some());
        assert!(t.alloc_table().is_some());
        assert_eq!(t.alloc_table(), None);
        assert_eq!(arena.used(), 3);
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
