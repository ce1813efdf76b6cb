//! The guest's machine layer: the arm64 `Image` header and entry, an EL1 exception
//! vector table that records every exception and lets the program go on, and the
//! accesses the attacks are made of (loads and stores that may abort, hypercalls, the
//! virtual GIC CPU interface, the virtual timer).
//!
//! Entry (Linux's arm64 boot protocol, `Documentation/arch/arm64/booting.rst`): vCPU 0
//! at the first byte of the image with x0 = the device tree; other vCPUs where PSCI
//! CPU_ON said, with x0 = its context id. Every vCPU runs at EL1h with its MMU off and
//! interrupts masked (PSTATE.DAIF); they stay masked: interrupts are only ever polled
//! (ICC_IAR1_EL1) and WFI wakes on a pending one regardless of the mask (Arm ARM D1.6,
//! "Wait for Interrupt").
//!
//! Exceptions (Arm ARM D1.10): the vector entry saves every general-purpose and FP/SIMD
//! register, [`exception`] records ESR_EL1, FAR_EL1 and ELR_EL1 for its vCPU and moves
//! ELR_EL1 on: past the instruction for a synchronous exception, or to the return
//! address in x30 for an instruction abort (the attacks branch there with `blr`).
//! PSTATE.IL is cleared, so an illegal exception return can be continued from.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Reads a system register by name.
macro_rules! sysreg {
    ($name:literal) => {{
        let v: u64;
        // SAFETY: reads a system register into a general-purpose register; no memory
        // effects. A trapped or UNDEFINED read is taken by the vector table, which
        // records it and resumes after the instruction.
        unsafe { core::arch::asm!(concat!("mrs {}, ", $name), out(reg) v, options(nostack)) };
        v
    }};
}
pub(crate) use sysreg;

/// Writes a system register (or runs a system instruction with a register operand).
macro_rules! sysreg_write {
    ($name:literal, $v:expr) => {{
        let v: u64 = $v;
        // SAFETY: writes a system register this guest owns, or attempts an access that
        // must trap or be UNDEFINED (the attacks); the vector table resumes after it.
        // No memory of this program is touched.
        unsafe { core::arch::asm!(concat!("msr ", $name, ", {}"), "isb", in(reg) v, options(nostack)) };
    }};
}
pub(crate) use sysreg_write;

/// Most vCPUs this guest runs on (its stacks and records).
pub const MAX_VCPUS: usize = 4;

core::arch::global_asm!(
    r#"
    .section .text.head, "ax"
    .global _start
_start:
    b       1f                      // code0
    .long   0                       // code1
    .quad   0                       // text_offset: at the 2 MiB-aligned start of RAM
    .quad   __image_size            // image_size: bss and stacks included
    .quad   0xa                     // flags: little-endian, 4 KiB pages, anywhere
    .quad   0                       // res2
    .quad   0                       // res3
    .quad   0                       // res4
    .ascii  "ARM\x64"               // magic
    .long   0                       // res5
1:  mov     x19, x0
    mov     x2, #(3 << 20)          // CPACR_EL1.FPEN: compiled code may use FP/SIMD
    msr     cpacr_el1, x2
    adrp    x2, attack_vectors
    add     x2, x2, :lo12:attack_vectors
    msr     vbar_el1, x2
    isb
    mrs     x20, mpidr_el1
    and     x20, x20, #0xff
    cmp     x20, #4
    b.hs    3f
    adrp    x3, __stacks_top
    add     x3, x3, :lo12:__stacks_top
    lsl     x2, x20, #14
    sub     sp, x3, x2
    cbnz    x20, 2f
    adrp    x3, __bss_start         // vCPU 0 clears the bss (a reset leaves it dirty)
    add     x3, x3, :lo12:__bss_start
    adrp    x4, __bss_end
    add     x4, x4, :lo12:__bss_end
0:  cmp     x3, x4
    b.hs    2f
    str     xzr, [x3], #8
    b       0b
2:  mov     x0, x20
    mov     x1, x19
    bl      guest_main
3:  wfe
    b       3b

    .section .text.vectors, "ax"
    .balign 2048
attack_vectors:
    .irp    n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
    .balign 128
    sub     sp, sp, #784
    stp     x0, x1, [sp]
    mov     x0, #\n
    b       attack_exception_entry
    .endr

attack_exception_entry:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    str     x30, [sp, #240]
    mrs     x2, elr_el1
    mrs     x3, spsr_el1
    stp     x2, x3, [sp, #248]
    add     x4, sp, #272
    stp     q0, q1, [x4, #0]
    stp     q2, q3, [x4, #32]
    stp     q4, q5, [x4, #64]
    stp     q6, q7, [x4, #96]
    stp     q8, q9, [x4, #128]
    stp     q10, q11, [x4, #160]
    stp     q12, q13, [x4, #192]
    stp     q14, q15, [x4, #224]
    stp     q16, q17, [x4, #256]
    stp     q18, q19, [x4, #288]
    stp     q20, q21, [x4, #320]
    stp     q22, q23, [x4, #352]
    stp     q24, q25, [x4, #384]
    stp     q26, q27, [x4, #416]
    stp     q28, q29, [x4, #448]
    stp     q30, q31, [x4, #480]
    mov     x1, sp
    bl      attack_exception
    add     x4, sp, #272
    ldp     q0, q1, [x4, #0]
    ldp     q2, q3, [x4, #32]
    ldp     q4, q5, [x4, #64]
    ldp     q6, q7, [x4, #96]
    ldp     q8, q9, [x4, #128]
    ldp     q10, q11, [x4, #160]
    ldp     q12, q13, [x4, #192]
    ldp     q14, q15, [x4, #224]
    ldp     q16, q17, [x4, #256]
    ldp     q18, q19, [x4, #288]
    ldp     q20, q21, [x4, #320]
    ldp     q22, q23, [x4, #352]
    ldp     q24, q25, [x4, #384]
    ldp     q26, q27, [x4, #416]
    ldp     q28, q29, [x4, #448]
    ldp     q30, q31, [x4, #480]
    ldp     x2, x3, [sp, #248]
    msr     elr_el1, x2
    msr     spsr_el1, x3
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldr     x30, [sp, #240]
    ldp     x0, x1, [sp]
    add     sp, sp, #784
    eret
"#
);

extern "C" {
    fn _start();
}

/// The entry point, for PSCI CPU_ON.
pub fn entry() -> u64 {
    _start as *const () as u64
}

/// The registers the vector entry saved (FP/SIMD registers follow, untouched here).
#[repr(C)]
pub struct Frame {
    x: [u64; 31],
    elr: u64,
    spsr: u64,
}

/// What the last exception of one vCPU was.
struct Record {
    count: AtomicU64,
    esr: AtomicU64,
    far: AtomicU64,
    elr: AtomicU64,
    /// Asynchronous exceptions (IRQ, FIQ, SError): never expected, interrupts stay masked.
    asynchronous: AtomicU64,
}

static RECORDS: [Record; MAX_VCPUS] = [const {
    Record {
        count: AtomicU64::new(0),
        esr: AtomicU64::new(0),
        far: AtomicU64::new(0),
        elr: AtomicU64::new(0),
        asynchronous: AtomicU64::new(0),
    }
}; MAX_VCPUS];

/// This vCPU's number (MPIDR_EL1.Aff0, which the VMM sets to the vCPU index).
pub fn cpu() -> usize {
    (sysreg!("mpidr_el1") & 0xff) as usize % MAX_VCPUS
}

#[no_mangle]
extern "C" fn attack_exception(kind: u64, f: &mut Frame) {
    let r = &RECORDS[cpu()];
    // Only this vCPU writes its record: plain loads and stores (no exclusives, which
    // this guest avoids on its Device-typed memory).
    r.count.store(r.count.load(Relaxed) + 1, Relaxed);
    r.esr.store(sysreg!("esr_el1"), Relaxed);
    r.far.store(sysreg!("far_el1"), Relaxed);
    r.elr.store(f.elr, Relaxed);
    if !kind.is_multiple_of(4) {
        r.asynchronous
            .store(r.asynchronous.load(Relaxed) + 1, Relaxed);
        return;
    }
    let ec = sysreg!("esr_el1") >> 26;
    if ec == 0x20 || ec == 0x21 {
        f.elr = f.x[30];
    } else {
        f.elr += 4;
    }
    f.spsr &= !(1 << 20);
}

/// A synchronous exception taken to this guest's EL1.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// ESR_EL1.
    pub esr: u64,
    /// FAR_EL1 (meaningful for aborts unless ESR_EL1.FnV says otherwise).
    pub far: u64,
    /// Where it happened (ELR_EL1 as taken).
    pub elr: u64,
}

impl Fault {
    /// The exception class.
    pub fn ec(&self) -> u64 {
        self.esr >> 26
    }
    /// The fault status code of an abort (DFSC/IFSC).
    pub fn fsc(&self) -> u64 {
        self.esr & 0x3f
    }
    /// ISS.WnR of a data abort.
    pub fn write(&self) -> bool {
        self.esr & (1 << 6) != 0
    }
    /// Whether a data or instruction abort came as a synchronous external abort (FSC
    /// 0b010000) with the given exception class.
    pub fn is_sea(&self, ec: u64) -> bool {
        self.ec() == ec && self.fsc() == 0x10
    }
}

/// Exceptions this vCPU has taken so far.
pub fn exceptions() -> u64 {
    RECORDS[cpu()].count.load(Relaxed)
}

/// Asynchronous exceptions this vCPU has taken (all unexpected).
pub fn asynchronous() -> u64 {
    RECORDS[cpu()].asynchronous.load(Relaxed)
}

/// The last exception this vCPU took (zeros if none).
pub fn last() -> Fault {
    let r = &RECORDS[cpu()];
    Fault {
        esr: r.esr.load(Relaxed),
        far: r.far.load(Relaxed),
        elr: r.elr.load(Relaxed),
    }
}

/// Runs `f`; the last exception it caused, if it caused any.
pub fn trapped(f: impl FnOnce()) -> Option<Fault> {
    let before = exceptions();
    f();
    let r = &RECORDS[cpu()];
    (r.count.load(Relaxed) != before).then(|| Fault {
        esr: r.esr.load(Relaxed),
        far: r.far.load(Relaxed),
        elr: r.elr.load(Relaxed),
    })
}

/// A 64-bit load from `addr`, which may abort.
pub fn read64(addr: u64) -> u64 {
    let v: u64;
    // SAFETY: a load from an address outside this program's memory (or an emulated
    // device): it either aborts into the vector table, which resumes after it, or reads
    // a value nobody else relies on.
    unsafe {
        core::arch::asm!("ldr {v}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack))
    };
    v
}

/// A 64-bit store to `addr`, which may abort.
pub fn write64(addr: u64, v: u64) {
    // SAFETY: a store to an emulated device register or an address outside guest RAM
    // (an abort, resumed after by the vector table), or to guest RAM nothing else uses.
    unsafe {
        core::arch::asm!("str {v}, [{a}]", a = in(reg) addr, v = in(reg) v, options(nostack))
    };
}

/// A 64-bit store to `addr` that says where its instruction is (to check ELR_EL1 of
/// the abort it causes); two `nop`s follow it, so a return one instruction off still
/// lands on an instruction without effect.
pub fn store_at(addr: u64, v: u64) -> u64 {
    let at: u64;
    // SAFETY: as in `write64`; `adr` only computes an address.
    unsafe {
        core::arch::asm!("adr {at}, 1f", "1: str {v}, [{a}]", "nop", "nop", a = in(reg) addr,
            v = in(reg) v, at = out(reg) at, options(nostack))
    };
    at
}

/// A 32-bit load from `addr`, which may abort.
pub fn read32(addr: u64) -> u32 {
    let v: u32;
    // SAFETY: as in `read64`.
    unsafe {
        core::arch::asm!("ldr {v:w}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack))
    };
    v
}

/// A 32-bit store to `addr`, which may abort.
pub fn write32(addr: u64, v: u32) {
    // SAFETY: as in `write64`.
    unsafe {
        core::arch::asm!("str {v:w}, [{a}]", a = in(reg) addr, v = in(reg) v, options(nostack))
    };
}

/// A load pair (no instruction syndrome for the hypervisor) from `addr`.
pub fn load_pair(addr: u64) -> u64 {
    let (a, b): (u64, u64);
    // SAFETY: as in `read64`.
    unsafe {
        core::arch::asm!("ldp {x}, {y}, [{p}]", p = in(reg) addr, x = out(reg) a, y = out(reg) b,
            options(nostack))
    };
    a ^ b
}

/// A store pair of two 32-bit registers (no instruction syndrome) to `addr`.
pub fn store_pair32(addr: u64, v: u32) {
    // SAFETY: as in `write64`.
    unsafe {
        core::arch::asm!("stp {v:w}, {v:w}, [{p}]", p = in(reg) addr, v = in(reg) v,
            options(nostack))
    };
}

/// Branches to `target` with the return address in x30 (an instruction fetch there).
pub fn execute(target: u64) {
    // SAFETY: `target` lies outside guest RAM: the fetch aborts, and the vector table
    // resumes at the return address in x30. Should it run anything, the callee follows
    // the C ABI as far as we know, which `clobber_abi` accounts for.
    unsafe { core::arch::asm!("blr {t}", t = in(reg) target, clobber_abi("C")) };
}

/// An illegal exception return (to EL2h from EL1, Arm ARM D1.11.5): the PE stays at EL1
/// with PSTATE.IL set, and the next instruction takes an Illegal Execution state
/// exception.
pub fn eret_to_el2() {
    // SAFETY: ELR_EL1 and SPSR_EL1 are scratch registers outside an exception handler;
    // the return lands on the `nop` below at EL1, whose exception the vector table
    // resumes after. No memory is touched.
    unsafe {
        core::arch::asm!(
            "adr {t}, 1f",
            "msr elr_el1, {t}",
            "mov {t}, #0x3c9",
            "msr spsr_el1, {t}",
            "eret",
            "1: nop",
            t = out(reg) _,
            options(nostack)
        )
    };
}

/// Sets the EL1 event register and waits for it (returns at once).
pub fn wfe_local() {
    // SAFETY: an event hint pair; no memory effects.
    unsafe { core::arch::asm!("sevl", "wfe", options(nostack, nomem)) };
}

/// Waits for an interrupt (pending, even while masked by PSTATE.I).
pub fn wfi() {
    // SAFETY: a wait hint; no memory effects.
    unsafe { core::arch::asm!("dsb sy", "wfi", options(nostack)) };
}

/// A hypercall: x0..x3 in, x0 back (the SMC Calling Convention).
pub fn hvc(x0: u64, x1: u64, x2: u64, x3: u64) -> u64 {
    let r: u64;
    // SAFETY: a call to our VMM; it reads x0..x3 and may write x0..x3, nothing else.
    unsafe {
        core::arch::asm!("hvc #0", inlateout("x0") x0 => r, inlateout("x1") x1 => _,
            inlateout("x2") x2 => _, inlateout("x3") x3 => _, options(nostack))
    };
    r
}

/// A secure monitor call (trapped by the hypervisor, HCR_EL2.TSC): as [`hvc`].
pub fn smc(x0: u64, x1: u64, x2: u64, x3: u64) -> u64 {
    let r: u64;
    // SAFETY: as in `hvc`; the hypervisor answers it.
    unsafe {
        core::arch::asm!("smc #0", inlateout("x0") x0 => r, inlateout("x1") x1 => _,
            inlateout("x2") x2 => _, inlateout("x3") x3 => _, options(nostack))
    };
    r
}

/// The virtual counter.
pub fn now() -> u64 {
    // SAFETY: an instruction barrier so the read is not taken early; no memory effects.
    unsafe { core::arch::asm!("isb", options(nostack, nomem)) };
    sysreg!("cntvct_el0")
}

/// Counter ticks per second.
pub fn frequency() -> u64 {
    sysreg!("cntfrq_el0").max(1)
}

/// Counter ticks in `us` microseconds.
pub fn ticks_us(us: u64) -> u64 {
    frequency() * us / 1_000_000
}

/// Microseconds since counter value `t0`.
pub fn micros_since(t0: u64) -> u64 {
    (now() - t0) * 1_000_000 / frequency()
}

/// Turns on the (virtual) GIC CPU interface for group 1 at every priority.
pub fn gic_cpu_on() {
    sysreg_write!("s3_0_c12_c12_5", 0x7); // ICC_SRE_EL1: SRE, DFB, DIB
    sysreg_write!("s3_0_c4_c6_0", 0xff); // ICC_PMR_EL1
    sysreg_write!("s3_0_c12_c12_7", 1); // ICC_IGRPEN1_EL1
}

/// Acknowledges the highest pending interrupt (ICC_IAR1_EL1); 1023 = none.
pub fn ack() -> u64 {
    sysreg!("s3_0_c12_c12_0") & 0xff_ffff
}

/// Ends interrupt `intid` (ICC_EOIR1_EL1: priority drop and deactivation).
pub fn eoi(intid: u64) {
    sysreg_write!("s3_0_c12_c12_1", intid);
}

/// Sends an SGI (ICC_SGI1R_EL1, trapped to the VMM).
pub fn sgi1r(v: u64) {
    sysreg_write!("s3_0_c12_c11_5", v);
}

/// Arms the virtual timer to fire `ticks` from now (CNTV_CVAL_EL0, CNTV_CTL_EL0.ENABLE).
pub fn timer_in(ticks: u64) {
    sysreg_write!("cntv_cval_el0", now() + ticks);
    sysreg_write!("cntv_ctl_el0", 1);
}

/// Stops the virtual timer.
pub fn timer_off() {
    sysreg_write!("cntv_ctl_el0", 0);
}
