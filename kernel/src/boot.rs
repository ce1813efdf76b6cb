//! Bring-up: the boot core's sequence and the secondaries'.
//!
//! Boot core: check EL2, find and parse the DTB, turn on the EL2 MMU, set up the frame
//! allocator, the GIC and its timer, start every other core with PSCI CPU_ON, check that
//! each one takes an SGI and ticks, then run the boot tasks. Secondary cores: MMU, GIC
//! redistributor and CPU interface, timer, then idle.

use core::sync::atomic::Ordering;
use kcore::addr::{PhysAddr, PhysRange};
use kcore::board::Board;
use kcore::bootimage::Payload;
use kcore::dtb;
use kcore::frames::FrameAllocator;

use crate::arch::cpu::{self, MAX_CPUS};
use crate::arch::regs::{self, sysreg_write};
use crate::arch::{gic, mmu, psci, timer, uart};
use crate::mem;
use crate::task::{self, RUNNER};
use crate::trap::{PONGS, SGI_PING, SGI_PONG};
use crate::ThisBoard;

/// The boot payload the tools packed (tasks to start).
static PAYLOAD: &[u8] = include_bytes!(env!("BULKHEAD_PAYLOAD"));

extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
}

/// Frames kept for loading boot tasks (their images, stacks, tables, root CNodes).
const BOOT_TASK_FRAMES: u64 = 4096;

/// How long the boot core waits for other cores' answers, in microseconds.
const WAIT_US: u64 = 2_000_000;

/// First Rust code on every core. `dtb` is the DTB address the loader passed (0 if none),
/// `core` the logical index, `el` the exception level we were entered at.
#[no_mangle]
extern "C" fn bh_kernel_entry(dtb: u64, core: usize, el: u64) -> ! {
    if el != 2 {
        if core == 0 {
            uart::init();
            defmt::error!(
                "Bulkhead must be entered at EL2 (hypervisor mode) but was entered at EL{=u64}; \
                 on QEMU pass -M virt,virtualization=on. Halting.",
                el
            );
        }
        crate::arch::halt();
    }
    if core != 0 {
        // Secondaries turn their MMU on before touching shared memory.
        mmu::enable();
    }
    cpu::init_this(core);
    // Physical interrupts must target EL2 to be taken here at all (with IMO/FMO/AMO
    // clear they would target EL1 and stay masked while EL2 runs). RW: lower levels are
    // AArch64.
    sysreg_write!("hcr_el2", (1 << 31) | (1 << 5) | (1 << 4) | (1 << 3));
    // FP/SIMD untrapped at EL0/EL1 (CPACR_EL1.FPEN = 0b11): tasks use it; the kernel
    // itself is built soft-float and never touches those registers.
    sysreg_write!("cpacr_el1", 0b11 << 20);
    // EL0 reads the counters and owns the EL1 physical timer (CNTHCTL_EL2.EL1PCTEN |
    // EL1PCEN, CNTKCTL_EL1.EL0PCTEN | EL0VCTEN | EL0PTEN); the kernel saves and loads
    // that timer per thread, so it is each thread's own.
    sysreg_write!("cnthctl_el2", 0b11);
    sysreg_write!("cntkctl_el1", (1 << 9) | 0b11);
    if cfg!(feature = "test-build") {
        // Test kernels only (a timing side channel otherwise): the PMU cycle counter counts
        // at every level (PMCCFILTR_EL0.NSH counts EL2 too) and EL0 may read it
        // (PMUSERENR_EL0.EN | CR). Under QEMU's -icount shift=0 it counts instructions.
        sysreg_write!("pmccfiltr_el0", 1 << 27);
        sysreg_write!("pmcntenset_el0", 1 << 31);
        sysreg_write!(
            "pmcr_el0",
            crate::arch::regs::sysreg_read!("pmcr_el0") | 1 | (1 << 6)
        );
        sysreg_write!("pmuserenr_el0", 0b101);
    }
    sysreg_write!(
        "vbar_el2",
        core::ptr::addr_of!(crate::arch::bh_vectors) as u64
    );
    regs::isb();
    if core == 0 {
        boot_primary(dtb)
    } else {
        boot_secondary()
    }
}

fn find_dtb(passed: u64) -> Option<dtb::Machine> {
    let addr = if passed != 0 {
        passed
    } else {
        ThisBoard::DTB_HINT?
    };
    // SAFETY: the address is the one the loader passed or the board's documented DTB
    // place, inside RAM; we read the 8-byte header to learn the size.
    let header: [u8; 8] = unsafe { mem::firmware_blob(addr, 8) }.try_into().ok()?;
    let size = match dtb::total_size(&header) {
        Ok(s) => s,
        Err(e) => {
            defmt::warn!(
                "no usable DTB at {=u64:#x} ({}); using board defaults",
                addr,
                e
            );
            return None;
        }
    };
    // SAFETY: the firmware's DTB, `size` bytes as its header says; nothing writes it
    // and the frame allocator never hands this range out (reserved below).
    let blob = unsafe { mem::firmware_blob(addr, size) };
    match dtb::parse(blob) {
        Ok(m) => {
            defmt::info!("DTB at {=u64:#x} ({=usize} bytes)", addr, size);
            Some(m)
        }
        Err(e) => {
            defmt::warn!(
                "DTB at {=u64:#x} is malformed ({}); using board defaults",
                addr,
                e
            );
            None
        }
    }
}

fn boot_primary(dtb_addr: u64) -> ! {
    uart::init();
    defmt::info!(
        "Bulkhead {=str} on {=str}: entered at EL2 on core 0",
        env!("CARGO_PKG_VERSION"),
        ThisBoard::NAME
    );
    let machine = find_dtb(dtb_addr);
    let fallback = ThisBoard::RAM_FALLBACK;
    let mut ram: heapless::Vec<PhysRange, { dtb::MAX_MEM_REGIONS }> = heapless::Vec::new();
    let mut cpus: heapless::Vec<u64, MAX_CPUS> = heapless::Vec::new();
    let my_mpidr = cpu::this().mpidr.load(Ordering::Relaxed);
    let _ = cpus.push(my_mpidr);
    if let Some(m) = &machine {
        ram.extend(m.memory.iter().copied());
        for &c in m.cpus.iter().filter(|&&c| c != my_mpidr) {
            if cpus.push(c).is_err() {
                defmt::warn!(
                    "the DTB lists {=usize} CPUs; this kernel supports {=usize}",
                    m.cpus.len(),
                    MAX_CPUS
                );
                break;
            }
        }
        if m.psci_smc == Some(false) {
            defmt::warn!("the DTB asks for PSCI over HVC; this board uses SMC");
        }
    }
    if machine.is_none() {
        for &c in ThisBoard::CPUS_FALLBACK.iter().filter(|&&c| c != my_mpidr) {
            if cpus.push(c).is_err() {
                break;
            }
        }
    }
    if ram.is_empty() {
        let _ = ram.push(
            PhysRange::new(fallback.base, fallback.size).unwrap_or(PhysRange {
                start: PhysAddr(fallback.base),
                end: PhysAddr(fallback.base),
            }),
        );
    }
    for r in &ram {
        defmt::info!(
            "RAM {=u64:#x}..{=u64:#x} ({=u64} MiB)",
            r.start.0,
            r.end.0,
            r.size() >> 20
        );
    }
    mmu::build(&ram);
    mmu::enable();
    defmt::info!("EL2 MMU and caches on (identity map)");

    let (kstart, kend) = (
        core::ptr::addr_of!(__kernel_start) as u64,
        core::ptr::addr_of!(__kernel_end) as u64,
    );
    let mut reserved: heapless::Vec<PhysRange, 4> = heapless::Vec::new();
    let _ = reserved.push(PhysRange {
        start: PhysAddr(kstart),
        end: PhysAddr(kend),
    });
    if let Some(hint) = ThisBoard::DTB_HINT {
        // QEMU places the DTB (up to 2 MiB) at the start of RAM.
        let _ = reserved.push(PhysRange {
            start: PhysAddr(hint),
            end: PhysAddr(hint + (2 << 20)),
        });
    }
    if ram.iter().any(|r| r.start.0 == 0) {
        // Physical address 0 is never handed out: kernel objects use 0 for "none".
        let _ = reserved.push(PhysRange {
            start: PhysAddr(0),
            end: PhysAddr(4096),
        });
    }
    if dtb_addr != 0 {
        let _ = reserved.push(PhysRange {
            start: PhysAddr(dtb_addr),
            end: PhysAddr(dtb_addr + (2 << 20)),
        });
    }
    *mem::FRAMES.lock() = FrameAllocator::from_ram(&ram, &reserved);
    defmt::info!(
        "kernel image {=u64:#x}..{=u64:#x}; {=u64} free frames",
        kstart,
        kend,
        mem::FRAMES.lock().available()
    );

    match gic::init_distributor() {
        Ok(lines) if gic::IS_V2 => {
            defmt::info!("GICv2 distributor on, {=u32} interrupt lines", lines)
        }
        Ok(lines) => defmt::info!("GICv3 distributor on, {=u32} interrupt lines", lines),
        Err(e) => panic_gic(e),
    }
    bring_up_this_cpu();
    cpu::ONLINE.fetch_add(1, Ordering::Release);
    let v = psci::version();
    defmt::info!("PSCI {=u32}.{=u32} via SMC", v >> 16, v & 0xffff);

    let mut n = cpus.len();
    for (i, &mpidr) in cpus.iter().enumerate().skip(1) {
        cpu::get(i).mpidr.store(mpidr, Ordering::Relaxed);
    }
    // Secondaries run with their caches off until their MMU is on.
    crate::arch::mmu::clean_for_secondaries();
    for (i, &mpidr) in cpus.iter().enumerate().skip(1) {
        let entry = crate::arch::bh_secondary_entry as *const () as u64;
        let started = psci::cpu_on(mpidr, entry, i as u64);
        if started.is_err() && machine.is_none() {
            // The board's CPU list is what it can have, not what this one has (an
            // emulator may model fewer cores): the first core that will not start ends it.
            defmt::info!(
                "no core {=usize} (MPIDR {=u64:#x}): {=usize} core(s) on this machine",
                i,
                mpidr,
                i
            );
            n = i;
            break;
        }
        if let Err(e) = started {
            defmt::error!(
                "PSCI CPU_ON for core {=usize} (MPIDR {=u64:#x}) failed: {=i64}",
                i,
                mpidr,
                e
            );
        }
    }
    let online = wait_until(|| cpu::ONLINE.load(Ordering::Acquire) >= n);
    let up = cpu::ONLINE.load(Ordering::Acquire);
    // Writers of the capability-and-IPC lock need take only these cores' flags; a core
    // that comes up later keeps to the slow paths.
    crate::cspace::CAPS.set_cores(up);
    if online {
        defmt::info!("all {=usize} cores online at EL2", n);
    } else {
        defmt::error!("only {=usize} of {=usize} cores came online", up, n);
    }

    // Every other core must take an interrupt from us and answer with one. One at a
    // time: an SGI pending at core 0 from several cores at once is a single interrupt.
    let mut answered = 0usize;
    for i in 1..up {
        let before = PONGS.load(Ordering::Relaxed);
        gic::send_sgi(SGI_PING, cpu::get(i).mpidr.load(Ordering::Relaxed));
        if wait_until(|| PONGS.load(Ordering::Relaxed) > before) {
            answered += 1;
        } else {
            defmt::error!("SGIs: core {=usize} did not answer", i);
        }
    }
    if answered == up - 1 {
        defmt::info!(
            "SGIs: core 0 pinged {=usize} cores, every one answered",
            up - 1
        );
    }
    if wait_until(|| (0..up).all(|i| cpu::get(i).ticks.load(Ordering::Relaxed) >= 3)) {
        defmt::info!(
            "EL2 timer ticking on all {=usize} cores ({=u64} Hz)",
            up,
            timer::HZ
        );
    } else {
        defmt::error!("the EL2 timer is not ticking on every core");
    }

    // Everything but a reserve for the boot tasks' own pages becomes Untyped memory: a
    // fixed part for stacks, CNodes and tables, plus their images (a VMM may carry a
    // guest kernel in its image).
    let image_frames: u64 = Payload::parse(PAYLOAD).map_or(0, |p| {
        p.tasks()
            .map(|t| kcore::elf::Elf::parse(t.elf).map_or(0, |e| e.memory_pages()))
            .sum()
    });
    let untyped = mem::FRAMES
        .lock()
        .split_off(BOOT_TASK_FRAMES + image_frames);
    let untyped_bytes: u64 = untyped.iter().map(|r| r.size()).sum();
    defmt::info!(
        "{=u64} MiB of RAM kept as Untyped memory for the first task",
        untyped_bytes >> 20
    );
    let mut runner = RUNNER.lock();
    match Payload::parse(PAYLOAD) {
        Ok(p) => {
            defmt::info!("boot payload: {=usize} task(s)", p.len());
            runner.set_payload(p, &untyped);
        }
        Err(e) => defmt::error!("boot payload unusable: {}", e),
    }
    runner.load_next();
    task::run_current(runner)
}

fn panic_gic(e: gic::GicError) -> ! {
    panic!("GIC bring-up failed: {:?}", e)
}

fn bring_up_this_cpu() {
    let sgis = [
        SGI_PING,
        SGI_PONG,
        crate::sched::SGI_RESCHED,
        ThisBoard::TIMER.hyp_phys,
        ThisBoard::TIMER.virt,
    ];
    if let Err(e) = gic::init_this_cpu(&sgis) {
        panic_gic(e);
    }
    timer::start();
}

/// Waits (taking interrupts) until `done` holds or WAIT_US passes; true if it held.
fn wait_until(done: impl Fn() -> bool) -> bool {
    let start = regs::uptime_us();
    while !done() {
        if regs::uptime_us() - start > WAIT_US {
            return done();
        }
        regs::wait_for_irq();
    }
    true
}

fn boot_secondary() -> ! {
    bring_up_this_cpu();
    let me = cpu::this();
    defmt::info!(
        "core {=usize} online at EL2 (MPIDR {=u64:#x})",
        me.index,
        me.mpidr.load(Ordering::Relaxed)
    );
    cpu::ONLINE.fetch_add(1, Ordering::Release);
    // Idle until a thread of this core is made ready.
    crate::sched::resume()
}
