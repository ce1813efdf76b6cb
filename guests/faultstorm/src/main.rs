//! The fault-storm guest: a bare-metal AArch64 program that runs at EL1 with its MMU
//! off on 4 vCPUs (started with PSCI CPU_ON through its VMM). In every round each vCPU
//! writes a pattern into its share of the test area (every 4th page), then all vCPUs
//! check every page of the area, while vCPU 0 has the VMM unmap, collapse or split the
//! area's stage-2 mappings under them. Every first touch of a page is a stage-2 fault the
//! kernel resolves in place; a page that lost data or came back at the wrong address
//! shows up as a bad word. The console is a PL011 the VMM emulates.
//!
//! At the end vCPUs 1..3 keep faulting while vCPU 0 asks the VMM to destroy the whole
//! address space under them (the VMM then checks that every table is back in its pool).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::fmt::Write;
    use core::sync::atomic::{AtomicU64, Ordering};

    /// Guest RAM and the test area inside it (the image and stacks sit below it).
    const AREA: u64 = 0x4040_0000;
    const AREA_END: u64 = 0x4400_0000;
    const PAGE: u64 = 4096;
    const VCPUS: u64 = 4;
    const ROUNDS: u64 = 4;
    const UART: u64 = 0x0900_0000;

    const PSCI_CPU_ON: u64 = 0xc400_0003;
    const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;
    /// Vendor hypercalls of the test VMM (SMCCC vendor-specific hypervisor range).
    const HVC_CHURN: u64 = 0xc600_0001;
    const HVC_TEARDOWN: u64 = 0xc600_0002;
    const CHURN_UNMAP: u64 = 1;
    const CHURN_COLLAPSE: u64 = 2;
    const CHURN_SPLIT: u64 = 3;
    const CHURN_LOG_START: u64 = 4;
    const CHURN_LOG_HARVEST: u64 = 5;
    const CHURN_POOL_FREE: u64 = 6;

    core::arch::global_asm!(
        ".section .text.start, \"ax\"",
        ".global _start",
        "_start:",
        "    mov x1, x0",
        // FP/SIMD on at EL1 (CPACR_EL1.FPEN): compiled code may use it.
        "    mov x2, #(3 << 20)",
        "    msr cpacr_el1, x2",
        "    isb",
        "    mrs x0, mpidr_el1",
        "    and x0, x0, #0xff",
        "    adrp x3, __stacks_top",
        "    add x3, x3, :lo12:__stacks_top",
        "    lsl x2, x0, #14",
        "    sub sp, x3, x2",
        "    bl guest_main",
        "1:  wfe",
        "    b 1b",
    );

    extern "C" {
        fn _start();
    }

    fn hvc(x0: u64, x1: u64, x2: u64, x3: u64) -> u64 {
        let r: u64;
        // SAFETY: a hypercall to our VMM: it reads x0..x3 and writes x0..x3; no memory of
        // ours is touched by it.
        unsafe {
            core::arch::asm!("hvc #0", inlateout("x0") x0 => r, inlateout("x1") x1 => _,
                inlateout("x2") x2 => _, inlateout("x3") x3 => _, options(nostack))
        };
        r
    }

    struct Uart;
    impl Write for Uart {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            for b in s.bytes() {
                // SAFETY: the PL011 data register of the emulated UART (an MMIO address
                // outside RAM: the access traps to the VMM, nothing else is written).
                unsafe { core::ptr::write_volatile(UART as *mut u32, b as u32) };
            }
            Ok(())
        }
    }

    static CONSOLE: AtomicU64 = AtomicU64::new(0);

    /// Prints one line (whole lines only, one vCPU at a time).
    fn line(args: core::fmt::Arguments) {
        while CONSOLE
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        let _ = Uart.write_fmt(args);
        let _ = Uart.write_str("\n");
        CONSOLE.store(0, Ordering::Release);
    }

    static ARRIVED: AtomicU64 = AtomicU64::new(0);
    static GENERATION: AtomicU64 = AtomicU64::new(0);
    static BAD: AtomicU64 = AtomicU64::new(0);
    static STORM: AtomicU64 = AtomicU64::new(0);

    fn barrier() {
        let gen = GENERATION.load(Ordering::Acquire);
        if ARRIVED.fetch_add(1, Ordering::AcqRel) + 1 == VCPUS {
            ARRIVED.store(0, Ordering::Relaxed);
            GENERATION.fetch_add(1, Ordering::Release);
        } else {
            while GENERATION.load(Ordering::Acquire) == gen {
                core::hint::spin_loop();
            }
        }
    }

    fn pattern(page: u64, round: u64) -> u64 {
        page ^ round.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5a5a_0000_0000_0000
    }

    fn write_pages(id: u64, round: u64) {
        write_pages_until(id, round, AREA_END)
    }

    fn write_pages_until(id: u64, round: u64, end: u64) {
        let mut p = AREA + id * PAGE;
        while p < end {
            let v = pattern(p, round);
            // SAFETY: `p` is a page of this guest's RAM test area, which nothing but
            // this program uses; aligned u64 accesses.
            unsafe {
                core::ptr::write_volatile(p as *mut u64, v);
                core::ptr::write_volatile((p + PAGE - 8) as *mut u64, !v);
            }
            p += VCPUS * PAGE;
        }
    }

    fn check_pages(round: u64) -> u64 {
        let mut bad = 0;
        let mut p = AREA;
        while p < AREA_END {
            let v = pattern(p, round);
            // SAFETY: as in `write_pages`.
            let (a, b) = unsafe {
                (
                    core::ptr::read_volatile(p as *const u64),
                    core::ptr::read_volatile((p + PAGE - 8) as *const u64),
                )
            };
            bad += (a != v) as u64 + (b != !v) as u64;
            p += PAGE;
        }
        bad
    }

    fn churn(round: u64) -> &'static str {
        let len = AREA_END - AREA;
        match round % 4 {
            0 => {
                hvc(HVC_CHURN, CHURN_UNMAP, AREA, len);
                "after unmapping the whole area"
            }
            1 => {
                let mut a = AREA;
                while a < AREA_END {
                    hvc(HVC_CHURN, CHURN_COLLAPSE, a, 2);
                    a += 2 << 20;
                }
                "after collapsing it into 2 MiB blocks"
            }
            2 => {
                let mut a = AREA;
                while a < AREA_END {
                    hvc(HVC_CHURN, CHURN_SPLIT, a, 2);
                    a += 2 << 20;
                }
                hvc(HVC_CHURN, CHURN_UNMAP, AREA, len / 2);
                "after splitting the blocks and unmapping half"
            }
            _ => {
                hvc(HVC_CHURN, CHURN_UNMAP, AREA, len);
                "after unmapping it again"
            }
        }
    }

    const HVC_BENCH: u64 = 0xc600_0003;
    const HVC_NULL: u64 = 0xc600_0004;
    /// IPAs outside the RAM region: the VMM maps a frame there on each fault.
    const VMM_AREA: u64 = 0x8000_0000;
    const SAMPLES: u64 = 32;

    fn cycles() -> u64 {
        let c: u64;
        // SAFETY: reads the PMU cycle counter (a test kernel counts EL2 too, and under
        // QEMU's -icount shift=0 it counts instructions); no memory effects.
        unsafe { core::arch::asm!("isb", "mrs {}, pmccntr_el0", "isb", out(reg) c) };
        c
    }

    fn median(v: &mut [u64]) -> u64 {
        v.sort_unstable();
        v[v.len() / 2]
    }

    /// Instructions of one load of `addr`, as the median of `SAMPLES` pages from `base`.
    fn loads(base: u64) -> u64 {
        let mut s = [0u64; SAMPLES as usize];
        for (i, x) in s.iter_mut().enumerate() {
            let p = base + i as u64 * PAGE;
            let t0 = cycles();
            // SAFETY: a page of guest RAM or an address the VMM maps on demand.
            unsafe { core::ptr::read_volatile(p as *const u64) };
            *x = cycles() - t0;
        }
        median(&mut s)
    }

    /// Instructions of `f`, median of `SAMPLES` runs, less an empty measurement.
    fn timed(f: impl Fn()) -> u64 {
        let mut s = [0u64; SAMPLES as usize];
        let mut e = [0u64; SAMPLES as usize];
        for (x, y) in s.iter_mut().zip(e.iter_mut()) {
            let t0 = cycles();
            f();
            *x = cycles() - t0;
            let t0 = cycles();
            *y = cycles() - t0;
        }
        median(&mut s).saturating_sub(median(&mut e))
    }

    /// The stage-2 fault benchmark (vCPU 0 only): a load that faults on a RAM page the
    /// kernel resolves, against one whose fault the VMM resolves by mapping a frame, both
    /// less a load that does not fault; then exits to the VMM: a null hypercall and an
    /// emulated MMIO read, each a full round trip back to the guest.
    fn bench() -> ! {
        let warm = AREA + (8 << 20);
        loads(warm);
        let plain = loads(warm);
        let kernel = loads(AREA).saturating_sub(plain);
        let vmm = loads(VMM_AREA).saturating_sub(plain);
        hvc(HVC_BENCH, 1, kernel, 0);
        hvc(HVC_BENCH, 2, vmm, 0);
        hvc(HVC_BENCH, 3, plain, 0);
        let null = timed(|| {
            hvc(HVC_NULL, 0, 0, 0);
        });
        let mmio = timed(|| {
            // SAFETY: a read of the emulated UART's flag register (MMIO, traps to the
            // VMM, no memory of ours is touched).
            unsafe { core::ptr::read_volatile((UART + 0x18) as *const u32) };
        });
        hvc(HVC_BENCH, 5, null, 0);
        hvc(HVC_BENCH, 6, mmio, 0);
        hvc(PSCI_SYSTEM_OFF, 0, 0, 0);
        loop {
            core::hint::spin_loop();
        }
    }

    fn counter() -> u64 {
        let c: u64;
        // SAFETY: reads the virtual counter; no memory effects.
        unsafe { core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) c) };
        c
    }

    fn frequency() -> u64 {
        let f: u64;
        // SAFETY: reads the counter frequency; no memory effects.
        unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) f) };
        f
    }

    /// Populate benchmark: wall time for 1, 2 and 4 vCPUs to fault in the whole test
    /// area (each its own contiguous share, every page once), after the VMM unmapped it;
    /// the best of 3 runs each, in microseconds of the virtual counter.
    fn populate(id: u64) -> ! {
        static ACTIVE: AtomicU64 = AtomicU64::new(0);
        for n in [1u64, 2, 4] {
            let mut best = u64::MAX;
            for _ in 0..3 {
                if id == 0 {
                    hvc(HVC_CHURN, CHURN_UNMAP, AREA, AREA_END - AREA);
                    ACTIVE.store(n, Ordering::Release);
                }
                barrier();
                let t0 = counter();
                if id < ACTIVE.load(Ordering::Acquire) {
                    let share = (AREA_END - AREA) / n;
                    let mut p = AREA + id * share;
                    while p < AREA + (id + 1) * share {
                        // SAFETY: a page of the test area, which only this program uses.
                        unsafe { core::ptr::write_volatile(p as *mut u64, p) };
                        p += PAGE;
                    }
                }
                barrier();
                if id == 0 {
                    best = best.min((counter() - t0) * 1_000_000 / frequency());
                }
            }
            if id == 0 {
                hvc(HVC_BENCH, 10 + n, best, 0);
            }
        }
        if id == 0 {
            hvc(PSCI_SYSTEM_OFF, 0, 0, 0);
        }
        loop {
            core::hint::spin_loop();
        }
    }

    /// QSBR liveness (mode 3), vCPU 0: fault in two 2 MiB ranges page by page, start
    /// vCPU 1 spinning at EL1 with interrupts masked (it never exits to the VMM), have the
    /// VMM collapse both ranges (their two page tables are retired, to be reused only
    /// after every core has been outside the kernel), then count the exits it takes until
    /// the pool has them back. Cores 2 and 3 run nothing: they sit in WFI throughout.
    fn qsbr() -> ! {
        const SPAN: u64 = 4 << 20;
        const LIMIT: u64 = 100_000;
        let mut p = AREA;
        while p < AREA + SPAN {
            // SAFETY: a page of this guest's RAM test area, which only this program uses.
            unsafe { core::ptr::write_volatile(p as *mut u64, pattern(p, 3)) };
            p += PAGE;
        }
        let r = hvc(PSCI_CPU_ON, 1, _start as *const () as u64, 3);
        while SPINNING.load(Ordering::Acquire) == 0 {
            core::hint::spin_loop();
        }
        let before = hvc(HVC_CHURN, CHURN_POOL_FREE, 0, 0);
        let c1 = hvc(HVC_CHURN, CHURN_COLLAPSE, AREA, 2);
        let c2 = hvc(HVC_CHURN, CHURN_COLLAPSE, AREA + (2 << 20), 2);
        let mut exits = 0;
        let mut free = before;
        while free < before + 2 && exits < LIMIT {
            free = hvc(HVC_CHURN, CHURN_POOL_FREE, 0, 0);
            exits += 1;
        }
        let mut bad = 0;
        let mut p = AREA;
        while p < AREA + SPAN {
            // SAFETY: as above.
            bad += (unsafe { core::ptr::read_volatile(p as *const u64) } != pattern(p, 3)) as u64;
            p += PAGE;
        }
        let spins = SPINS.load(Ordering::Acquire);
        line(format_args!(
            "faultstorm: QSBR: 2 retired tables back after {} exit(s), {} -> {} free; vCPU 1 {} spins; {} bad",
            exits, before, free, spins, bad
        ));
        if r != 0 || c1 != 0 || c2 != 0 {
            line(format_args!(
                "faultstorm: CPU_ON {}, collapses {} {}",
                r, c1, c2
            ));
        }
        if r == 0 && c1 == 0 && c2 == 0 && free >= before + 2 && bad == 0 && spins > 0 {
            line(format_args!(
                "faultstorm: PASS: retired tables reclaimed with an idle core and a spinning guest"
            ));
        } else {
            line(format_args!("faultstorm: FAIL: QSBR liveness"));
        }
        hvc(PSCI_SYSTEM_OFF, 0, 0, 0);
        loop {
            core::hint::spin_loop();
        }
    }

    static SPINNING: AtomicU64 = AtomicU64::new(0);
    static SPINS: AtomicU64 = AtomicU64::new(0);

    /// vCPU 1 in mode 3: interrupts masked, a loop that touches only its own counter (in
    /// RAM already mapped), forever.
    fn spin() -> ! {
        // SAFETY: masks this vCPU's interrupts; no memory effects.
        unsafe { core::arch::asm!("msr daifset, #0xf", options(nomem, nostack)) };
        SPINNING.store(1, Ordering::Release);
        loop {
            SPINS.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[no_mangle]
    extern "C" fn guest_main(id: u64, mode: u64) -> ! {
        static MODE: AtomicU64 = AtomicU64::new(0);
        if id == 0 && mode == 1 {
            bench();
        }
        if mode == 3 {
            if id == 0 {
                qsbr();
            }
            spin();
        }
        if id == 0 {
            MODE.store(mode, Ordering::Release);
            line(format_args!(
                "faultstorm: vCPU 0 up at EL1, starting {} more",
                VCPUS - 1
            ));
            for v in 1..VCPUS {
                let r = hvc(PSCI_CPU_ON, v, _start as *const () as u64, 0);
                if r != 0 {
                    line(format_args!("faultstorm: CPU_ON {} failed: {:#x}", v, r));
                }
            }
        }
        barrier();
        if MODE.load(Ordering::Acquire) == 2 {
            populate(id);
        }
        let pages = (AREA_END - AREA) / PAGE;
        for round in 0..ROUNDS {
            write_pages(id, round);
            barrier();
            let what = if id == 0 { churn(round) } else { "" };
            BAD.fetch_add(check_pages(round), Ordering::AcqRel);
            barrier();
            if id == 0 {
                line(format_args!(
                    "faultstorm: round {}: {} pages checked by {} vCPUs {}, {} bad words",
                    round,
                    pages,
                    VCPUS,
                    what,
                    BAD.load(Ordering::Acquire)
                ));
            }
        }
        barrier();
        // Dirty logging: the VMM write-protects the area; the vCPUs write the first half
        // again (with the last round's pattern, so nothing changes); the VMM's bitmap must
        // hold exactly those pages, and nothing once harvested.
        if id == 0 {
            hvc(HVC_CHURN, CHURN_LOG_START, AREA, AREA_END - AREA);
        }
        barrier();
        let half = AREA + (AREA_END - AREA) / 2;
        write_pages_until(id, ROUNDS - 1, half);
        barrier();
        if id == 0 {
            let logged = hvc(HVC_CHURN, CHURN_LOG_HARVEST, AREA, AREA_END - AREA);
            let again = hvc(HVC_CHURN, CHURN_LOG_HARVEST, AREA, AREA_END - AREA);
            line(format_args!(
                "faultstorm: dirty log: {} of {} pages written were logged, then {}",
                logged,
                (half - AREA) / PAGE,
                again
            ));
            if logged != (half - AREA) / PAGE || again != 0 {
                BAD.fetch_add(1, Ordering::AcqRel);
            }
        }
        barrier();
        if id == 0 {
            let bad = BAD.load(Ordering::Acquire);
            if bad == 0 {
                line(format_args!(
                    "faultstorm: PASS: every page verified in {} rounds",
                    ROUNDS
                ));
            } else {
                line(format_args!("faultstorm: FAIL: {} bad words", bad));
                hvc(PSCI_SYSTEM_OFF, 0, 0, 0);
            }
            STORM.store(1, Ordering::Release);
            // Keep the others faulting, then have the address space destroyed under them.
            for _ in 0..4 {
                hvc(HVC_CHURN, CHURN_UNMAP, AREA, AREA_END - AREA);
            }
            hvc(HVC_TEARDOWN, 0, 0, 0);
            hvc(PSCI_SYSTEM_OFF, 0, 0, 0);
        }
        while STORM.load(Ordering::Acquire) == 0 {
            core::hint::spin_loop();
        }
        loop {
            check_pages(ROUNDS - 1);
        }
    }

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo) -> ! {
        line(format_args!("faultstorm: panic"));
        hvc(PSCI_SYSTEM_OFF, 0, 0, 0);
        loop {
            core::hint::spin_loop();
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("faultstorm is a bare-metal guest: run it with `cargo xtask test`");
    std::process::exit(2);
}
