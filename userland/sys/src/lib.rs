//! Bulkhead's system-call ABI, the one definition both the kernel and userland compile.
//!
//! A task enters the kernel with `svc #0`, the syscall number in `x7` and arguments in
//! `x0..x5`. The kernel answers in `x0` (an [`Error`] code, or 0 for success) and leaves
//! every other general-purpose register as it was. `docs/abi.md` is the reference.
#![no_std]

/// System-call numbers (in `x7`).
#[repr(u64)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syscall {
    /// `x0` = address, `x1` = length of one encoded defmt frame (see `kcore::logwire`).
    DebugLog = 1,
    /// `x0` = exit status. Does not return.
    Exit = 2,
    /// Invoke the capability at `x0` (an index resolved at depth 64 in the caller's
    /// CSpace root) with `x1` = [`MessageInfo`] and `x2..x5` = message registers 0..3.
    /// Returns `x0` = 0 or an [`Error`].
    Call = 3,
    /// Describe a slot: `x0` = index, `x1` = depth (resolved from the caller's CSpace
    /// root). Returns `x0` = 0 or an [`Error`], `x1`, `x2` = the slot's encoded cap,
    /// `x3` = the slot's address, `x4` = its parent's slot address or `u64::MAX`. For tests.
    DebugSlot = 4,
    /// Send on the endpoint at `x0` (needs Write), message in x1..x5; blocks until a
    /// receiver takes it. Returns `x0` = 0 or an [`Error`].
    Send = 5,
    /// As Send, but if no receiver waits the message is dropped and the call returns.
    NBSend = 6,
    /// Receive on the endpoint at `x0` (needs Read). Returns `x0` = 0 or an error,
    /// `x1..x5` = the message, `x6` = the badge of the sender's cap.
    Recv = 7,
    /// As Recv, but returns at once with an empty message (`x1` = 0) if no sender waits.
    NBRecv = 8,
    /// Reply to the last Call received (message in x1..x5); dropped if nobody waits.
    Reply = 9,
    /// Reply, then Recv on the endpoint at `x0`.
    ReplyRecv = 10,
    /// Give up the rest of this time slice to threads of the same priority.
    Yield = 11,
    /// Signal the notification at `x0` (needs Write) with its cap's badge.
    Signal = 12,
    /// Wait on the notification at `x0` (needs Read). Returns `x0` = 0 or an error,
    /// `x6` = the signalled bits.
    Wait = 13,
    /// As Wait, but returns at once (`x6` = 0 when nothing was signalled).
    Poll = 14,
    /// Returns `x1` = how many IPC operations the same-core fast path completed on the
    /// caller's core since boot. For tests.
    DebugFastPathCount = 15,
}

impl Syscall {
    /// Decodes a syscall number; unknown numbers are `None`.
    pub const fn from_raw(n: u64) -> Option<Self> {
        match n {
            1 => Some(Syscall::DebugLog),
            2 => Some(Syscall::Exit),
            3 => Some(Syscall::Call),
            4 => Some(Syscall::DebugSlot),
            5 => Some(Syscall::Send),
            6 => Some(Syscall::NBSend),
            7 => Some(Syscall::Recv),
            8 => Some(Syscall::NBRecv),
            9 => Some(Syscall::Reply),
            10 => Some(Syscall::ReplyRecv),
            11 => Some(Syscall::Yield),
            12 => Some(Syscall::Signal),
            13 => Some(Syscall::Wait),
            14 => Some(Syscall::Poll),
            15 => Some(Syscall::DebugFastPathCount),
            _ => None,
        }
    }
}

/// Error codes returned in `x0` (0 means success).
#[repr(u64)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The syscall number is unknown.
    UnknownSyscall = 1,
    /// A buffer is not mapped readable in the caller's address space.
    BadAddress = 2,
    /// A length is zero or too large.
    BadLength = 3,
    /// The argument is malformed (e.g. a log frame that is not one delimited frame).
    InvalidArgument = 4,
    /// The invoked capability slot is empty or the cap is of no use for this call.
    InvalidCapability = 5,
    /// The operation is not allowed on this capability (wrong type, already badged).
    IllegalOperation = 6,
    /// A number is outside its documented range.
    RangeError = 7,
    /// An address or size is not suitably aligned.
    AlignmentError = 8,
    /// A capability address does not resolve (guard, depth, or a non-CNode on the way).
    FailedLookup = 9,
    /// A message is longer than the buffer that should hold it.
    TruncatedMessage = 10,
    /// The destination slot is not empty.
    DeleteFirst = 11,
    /// The capability has derived children that must be revoked first.
    RevokeFirst = 12,
    /// The Untyped has no room for the requested objects.
    NotEnoughMemory = 13,
    /// The object the thread waited on was destroyed (or the thread was suspended).
    Aborted = 14,
    /// Another writer holds a translation entry on the way: try again.
    Busy = 15,
}

impl Error {
    /// Decodes a return code; 0 and unknown codes are `None`.
    pub const fn from_raw(n: u64) -> Option<Self> {
        match n {
            1 => Some(Error::UnknownSyscall),
            2 => Some(Error::BadAddress),
            3 => Some(Error::BadLength),
            4 => Some(Error::InvalidArgument),
            5 => Some(Error::InvalidCapability),
            6 => Some(Error::IllegalOperation),
            7 => Some(Error::RangeError),
            8 => Some(Error::AlignmentError),
            9 => Some(Error::FailedLookup),
            10 => Some(Error::TruncatedMessage),
            11 => Some(Error::DeleteFirst),
            12 => Some(Error::RevokeFirst),
            13 => Some(Error::NotEnoughMemory),
            14 => Some(Error::Aborted),
            15 => Some(Error::Busy),
            _ => None,
        }
    }
}

pub mod cap;

/// Where the kernel maps a boot task's first thread's IPC buffer (one page, read/write;
/// also passed in its `x6`).
pub const BOOT_IPC_BUFFER: u64 = 0xf000_0000;

/// IPC buffer words: message registers 4..63 at their own index; the capability to send
/// (an index at depth 64 in the sender's CSpace) at [`ipc_buffer::SEND_CAP`]; the slot that
/// receives a capability (depth 64 in the receiver's CSpace, 0 = none) at
/// [`ipc_buffer::RECV_SLOT`].
pub mod ipc_buffer {
    /// Word holding the capability to send.
    pub const SEND_CAP: usize = 64;
    /// Word holding the receive slot.
    pub const RECV_SLOT: usize = 67;
    /// Most message registers.
    pub const MAX_MRS: u64 = 64;
}

/// The message info word of a Call: label in bits 63:12, capabilities in bits 8:7,
/// length (message registers used) in bits 6:0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageInfo(pub u64);

impl MessageInfo {
    /// A message with `label` and `length` registers.
    pub const fn new(label: u64, length: u64) -> Self {
        MessageInfo((label << 12) | (length & 0x7f))
    }
    /// The same, also carrying `caps` capabilities (0 or 1 are delivered).
    pub const fn with_caps(self, caps: u64) -> Self {
        MessageInfo((self.0 & !(3 << 7)) | ((caps & 3) << 7))
    }
    /// Capabilities carried (as sent, or as delivered to a receiver).
    pub const fn caps(self) -> u64 {
        (self.0 >> 7) & 3
    }
    /// The label.
    pub const fn label(self) -> u64 {
        self.0 >> 12
    }
    /// Message registers used.
    pub const fn length(self) -> u64 {
        self.0 & 0x7f
    }
}

/// Invocation labels and how each packs its arguments into message registers 0..3.
///
/// CNode invocations resolve their slot arguments relative to the invoked CNode cap
/// (the semantics of `docs/design/capabilities.md` with that cap as root).
pub mod invocation {
    /// Untyped Retype. MR0 = object type | size_bits << 32; MR1 = destination index;
    /// MR2 = destination depth | count << 32; MR3 = offset. The destination slot (resolved
    /// from the caller's CSpace root) must hold the CNode that receives the new caps.
    pub const UNTYPED_RETYPE: u64 = 1;
    /// CNode Copy. MR0 = dest index; MR1 = src index; MR2 = dest depth | src depth << 8 |
    /// rights << 16.
    pub const CNODE_COPY: u64 = 2;
    /// CNode Mint: as Copy, MR3 = badge.
    pub const CNODE_MINT: u64 = 3;
    /// CNode Move: MR0, MR1, MR2 as Copy (rights ignored).
    pub const CNODE_MOVE: u64 = 4;
    /// CNode Mutate: as Move, MR3 = badge.
    pub const CNODE_MUTATE: u64 = 5;
    /// CNode Delete: MR0 = index; MR2 = depth.
    pub const CNODE_DELETE: u64 = 6;
    /// CNode Revoke: MR0 = index; MR2 = depth.
    pub const CNODE_REVOKE: u64 = 7;
    /// TCB Configure: MR0 = index (depth 64) of the CNode cap that becomes the thread's
    /// CSpace root; MR1 = priority (0..=255); MR2 = index, in the thread's new CSpace, of
    /// the endpoint its faults go to (0 = none). The thread shares the caller's address
    /// space.
    pub const TCB_CONFIGURE: u64 = 8;
    /// TCB WriteRegisters: MR0 = pc, MR1 = sp, MR2 = x0, MR3 = x1 (a configured, inactive
    /// thread only).
    pub const TCB_WRITE_REGISTERS: u64 = 9;
    /// TCB Resume: make a configured thread runnable.
    pub const TCB_RESUME: u64 = 10;
    /// TCB Suspend: stop the thread wherever it is.
    pub const TCB_SUSPEND: u64 = 11;
    /// TCB SetPriority: MR0 = priority (0..=255).
    pub const TCB_SET_PRIORITY: u64 = 12;
    /// IRQControl Get: MR0 = interrupt ID; MR1 = index (depth 64 in the caller's CSpace)
    /// of the empty slot that receives the IRQHandler cap.
    pub const IRQ_CONTROL_GET: u64 = 13;
    /// IRQHandler SetNotification: MR0 = index of a notification cap (needs Write); the
    /// interrupt is enabled and each occurrence signals it with that cap's badge.
    pub const IRQ_HANDLER_SET_NOTIFICATION: u64 = 14;
    /// IRQHandler Ack: the interrupt was handled; deliver the next one.
    pub const IRQ_HANDLER_ACK: u64 = 15;
    /// IRQHandler Clear: unbind the notification and disable the interrupt.
    pub const IRQ_HANDLER_CLEAR: u64 = 16;
    /// TCB SetPartition: MR0 = time partition (0..=3); the thread must be inactive.
    pub const TCB_SET_PARTITION: u64 = 17;
    /// SchedControl SetWindows: MR0 = core; MR1 = number of windows (0..=8, 0 = partition
    /// 0 forever); MR2 = their partitions, 4 bits each from bit 0; MR3 = their lengths in
    /// timer ticks (10 ms), 8 bits each from bit 0, each at least 1.
    pub const SCHED_CONTROL_SET_WINDOWS: u64 = 18;
    /// TCB SetAffinity: MR0 = the core the thread runs on (an online core); the thread
    /// must be inactive.
    pub const TCB_SET_AFFINITY: u64 = 19;
    /// TCB ReadRegister: MR0 = register index ([`reg`]); the value comes back in x1.
    /// The thread must not be running (inactive, or waiting for a fault reply).
    pub const TCB_READ_REGISTER: u64 = 20;
    /// TCB WriteRegister: MR0 = register index ([`reg`]), MR1 = value. As ReadRegister;
    /// SPSR values are checked (a thread can only be sent to EL0, or EL1 with a VCPU).
    pub const TCB_WRITE_REGISTER: u64 = 21;
    /// TCB SetSpace: MR0 = index of a configured VSpace cap; the (inactive) thread runs
    /// in that stage-2 address space from now on.
    pub const TCB_SET_SPACE: u64 = 22;
    /// VSpace Configure: MR0 = index of a TablePool cap. Gives the VSpace a VMID and the
    /// pool its tables come from; once only. x1 = the VMID, x2 = VMIDs still free.
    pub const VSPACE_CONFIGURE: u64 = 23;
    /// VSpace BindRegion: MR0 = index of a Frame cap (any size), MR1 = IPA (aligned to
    /// the frame's size), MR2 = rights ([`map_rights`]). Guest faults inside the region
    /// are resolved by the kernel on the faulting core; nothing is mapped up front.
    pub const VSPACE_BIND_REGION: u64 = 24;
    /// VSpace UnmapRange: MR0 = IPA, MR1 = length (page aligned). Every leaf inside goes
    /// (a region's pages come back on the next fault); x1 = leaves removed.
    pub const VSPACE_UNMAP_RANGE: u64 = 25;
    /// VSpace Collapse: MR0 = IPA, MR1 = level (2: 2 MiB, 1: 1 GiB). The range, inside
    /// one bound region, becomes one block mapping; its tables go back to the pool after
    /// a grace period.
    pub const VSPACE_COLLAPSE: u64 = 26;
    /// VSpace Split: MR0 = IPA, MR1 = level of the block (1 or 2). The block becomes a
    /// table of next-level mappings of the same memory.
    pub const VSPACE_SPLIT: u64 = 27;
    /// Frame Map: MR0 = index of a VSpace cap, or [`SELF_SPACE`] for the caller's own
    /// address space; MR1 = IPA (aligned to the frame's size); MR2 = rights
    /// ([`map_rights`]) | memory type << 8 (0 normal, 1 device). A frame is mapped at
    /// most once into each address space, never over another mapping or region; every
    /// mapping goes when the frame is destroyed.
    pub const FRAME_MAP: u64 = 28;
    /// Frame Unmap: removes the frame's mapping.
    pub const FRAME_UNMAP: u64 = 29;
    /// TablePool Info: x1 = free tables, x2 = all tables of the pool.
    pub const POOL_INFO: u64 = 30;
    /// VCPU BindTcb: MR0 = index of an inactive TCB cap without a VCPU. The thread then
    /// runs this VCPU's guest at EL1 when scheduled.
    pub const VCPU_BIND_TCB: u64 = 31;
    /// VCPU InjectIrq: MR0 = virtual INTID (16..1020, or an SGI 0..15), MR1 = priority
    /// (0..=255, upper 5 bits used). Queued, delivered through a list register at the
    /// guest's next entry.
    pub const VCPU_INJECT_IRQ: u64 = 32;
    /// VCPU ReadSysreg: MR0 = [`vcpu_reg`] index; the value comes back in x1.
    pub const VCPU_READ_SYSREG: u64 = 33;
    /// VCPU WriteSysreg: MR0 = [`vcpu_reg`] index, MR1 = value. The bound thread must not
    /// be running.
    pub const VCPU_WRITE_SYSREG: u64 = 34;
    /// VSpace LogDirty: MR0 = base IPA of a bound region, MR1 = index of a writable Frame
    /// cap (at least one bit per page of the region) that becomes its dirty bitmap, or 0
    /// to stop logging. Every page of the region is write-protected (again: call it after
    /// harvesting the bitmap); the first write to a page sets its bit. x1 = pages
    /// write-protected.
    pub const VSPACE_LOG_DIRTY: u64 = 35;
    /// Untyped Info: x1 = its watermark (bytes from its base that retypes have used; it
    /// goes back to 0 at the first Retype after every object made from it is gone), x2 =
    /// its size in bytes.
    pub const UNTYPED_INFO: u64 = 36;
    /// FRAME_MAP's MR0 for the caller's own address space.
    pub const SELF_SPACE: u64 = u64::MAX;
}

/// The memory map of a Linux VM, shared by the VMM (which loads it) and the tools (which
/// generate the guest's device tree for it). QEMU-virt-like, so Linux finds familiar
/// addresses: GICv3 distributor and redistributors, a PL011, RAM at 1 GiB.
pub mod vm_layout {
    /// Guest RAM base (IPA).
    pub const RAM_BASE: u64 = 0x4000_0000;
    /// log2 of the guest RAM size (256 MiB).
    pub const RAM_BITS: u32 = 28;
    /// Where the kernel `Image` goes (RAM base + its header's text_offset).
    pub const KERNEL: u64 = RAM_BASE;
    /// Where the initramfs goes.
    pub const INITRD: u64 = RAM_BASE + 0x0c00_0000;
    /// Where the device tree goes (at most [`DTB_MAX`] bytes).
    pub const DTB: u64 = RAM_BASE + 0x0f00_0000;
    /// Largest device tree.
    pub const DTB_MAX: u64 = 0x10_0000;
    /// GICv3 distributor (64 KiB).
    pub const GICD: u64 = 0x0800_0000;
    /// GICv3 redistributors (128 KiB per vCPU: RD_base, then SGI_base).
    pub const GICR: u64 = 0x080a_0000;
    /// The emulated PL011.
    pub const UART: u64 = 0x0900_0000;
    /// The PL011's interrupt (SPI 1, INTID 33).
    pub const UART_SPI: u32 = 1;
    /// Most vCPUs of a Linux VM.
    pub const MAX_VCPUS: u64 = 4;
}

/// Register indices of TCB ReadRegister/WriteRegister: 0..=30 are x0..x30.
pub mod reg {
    /// The stack pointer of EL0 (SP_EL0).
    pub const SP: u64 = 31;
    /// The program counter (where the thread resumes).
    pub const PC: u64 = 32;
    /// The saved PSTATE (SPSR).
    pub const SPSR: u64 = 33;
}

/// Rights bits of a mapping (FRAME_MAP, VSPACE_BIND_REGION).
pub mod map_rights {
    /// Readable.
    pub const READ: u64 = 1;
    /// Writable.
    pub const WRITE: u64 = 2;
    /// Executable.
    pub const EXEC: u64 = 4;
    /// All three.
    pub const RWX: u64 = 7;
}

/// VCPU system-register indices (VCPU ReadSysreg/WriteSysreg).
pub mod vcpu_reg {
    /// SCTLR_EL1.
    pub const SCTLR_EL1: u64 = 0;
    /// SP_EL1.
    pub const SP_EL1: u64 = 12;
    /// ELR_EL1.
    pub const ELR_EL1: u64 = 13;
    /// SPSR_EL1.
    pub const SPSR_EL1: u64 = 14;
    /// ESR_EL1.
    pub const ESR_EL1: u64 = 15;
    /// FAR_EL1.
    pub const FAR_EL1: u64 = 16;
    /// VBAR_EL1.
    pub const VBAR_EL1: u64 = 9;
    /// VMPIDR_EL2: the MPIDR the guest reads.
    pub const VMPIDR: u64 = 24;
    /// CNTVOFF_EL2: the guest's virtual counter offset.
    pub const CNTVOFF: u64 = 25;
    /// Number of indices.
    pub const COUNT: u64 = 26;
}

/// Fault messages: the label of the message a faulting thread's handler receives, and
/// what the message registers hold. The handler's Reply resumes the thread: label 0
/// retries the faulting instruction, label [`fault::REPLY_SET_PC`] resumes at MR0.
pub mod fault {
    /// Data abort: MR0 = pc, MR1 = faulting address (IPA), MR2 = ESR.
    pub const DATA_ABORT: u64 = 1;
    /// Instruction abort: MR0 = pc, MR1 = faulting address, MR2 = ESR.
    pub const INSTRUCTION_ABORT: u64 = 2;
    /// Undefined instruction: MR0 = pc, MR2 = ESR.
    pub const UNDEFINED: u64 = 3;
    /// Unknown syscall: MR0 = pc (after the `svc`), MR1 = the number in x7.
    pub const UNKNOWN_SYSCALL: u64 = 4;
    /// Any other exception: MR0 = pc, MR2 = ESR.
    pub const OTHER: u64 = 5;
    /// A guest's HVC: MR0..MR3 = x0..x3; the pc is already past the `hvc`.
    pub const HYPERCALL: u64 = 6;
    /// A guest's SMC: as [`HYPERCALL`] (the kernel steps the pc past the `smc`).
    pub const SMC: u64 = 7;
    /// A guest's trapped system-register access: MR0 = pc, MR1 = ISS (register and
    /// direction, Arm ARM D17.2.37), MR2 = ESR, MR3 = the value written (for writes).
    pub const SYSREG: u64 = 8;
    /// A guest's access outside its bound regions (MMIO): the data-abort shape, MR0 = pc,
    /// MR1 = IPA, MR2 = ESR, MR3 = the value written (for writes with a valid syndrome).
    pub const VM_DATA_ABORT: u64 = 9;
    /// A guest's instruction fetch outside its bound regions: MR0 = pc, MR1 = IPA,
    /// MR2 = ESR.
    pub const VM_INSTRUCTION_ABORT: u64 = 10;
    /// Reply label: resume at MR0.
    pub const REPLY_SET_PC: u64 = 1;
    /// Reply label: the access was emulated: step the pc past the instruction; if MR0 is
    /// a register number (0..=30), it receives MR1 (the value of an emulated load).
    pub const REPLY_EMULATED: u64 = 2;
    /// Reply label: x0..x3 = MR0..MR3 (the results of a hypercall or SMC).
    pub const REPLY_RESULTS: u64 = 3;
    /// REPLY_EMULATED's MR0 when no register receives a value.
    pub const NO_REGISTER: u64 = 31;
}

/// What a boot task does, passed in its `x0` by the kernel from the boot payload.
///
/// The system description names a mode; the tools turn the name into its number.
pub mod task_mode {
    /// Log a greeting and exit with status 0.
    pub const HELLO: u64 = 0;
    /// Read an address outside the task's memory (a stage-2 translation fault).
    pub const FAULT_READ: u64 = 1;
    /// Write to the task's own read-only code (a stage-2 permission fault).
    pub const FAULT_WRITE_CODE: u64 = 2;
    /// Execute an undefined instruction.
    pub const FAULT_UNDEF: u64 = 3;
    /// Hand the kernel bad arguments (bad pointers, lengths, unknown syscalls) and check
    /// that each returns its documented error; exit 0 if all did.
    pub const BAD_SYSCALLS: u64 = 4;
    /// Jump to an address outside the task's memory (an instruction abort).
    pub const FAULT_EXEC: u64 = 5;
    /// Run the on-target kernel test suite (`ktest`).
    pub const KTEST: u64 = 6;
    /// Fuzz the capability invocations with 100,000 random calls (`ktest`).
    pub const FUZZ: u64 = 7;
    /// The same with 1,000,000 calls (a documented long run).
    pub const FUZZ_FULL: u64 = 8;
    /// Run the target half of the on-target differential test (`ktest`).
    pub const CAPDIFF: u64 = 9;
    /// Run the IPC benchmark (`ktest`, needs a test kernel and QEMU's -icount).
    pub const BENCH_IPC: u64 = 10;
    /// VMM: run the fault-storm test guest (4 vCPUs) and churn its stage-2 mappings.
    pub const VM_FAULTSTORM: u64 = 11;
    /// VMM: the stage-2 fault benchmark (in-kernel faults vs faults resolved by the VMM).
    pub const BENCH_STAGE2: u64 = 12;
    /// VMM: the populate benchmark (1, 2 and 4 vCPUs faulting in guest RAM).
    pub const BENCH_POPULATE: u64 = 13;
    /// VMM: run the Linux guest the tools built into it.
    pub const VM_LINUX: u64 = 14;
    /// VMM: the QSBR liveness test (the fault-storm guest's mode 3).
    pub const VM_QSBR: u64 = 15;

    /// Every mode with its name in system descriptions.
    pub const ALL: &[(&str, u64)] = &[
        ("hello", HELLO),
        ("fault-read", FAULT_READ),
        ("fault-write-code", FAULT_WRITE_CODE),
        ("fault-undef", FAULT_UNDEF),
        ("bad-syscalls", BAD_SYSCALLS),
        ("fault-exec", FAULT_EXEC),
        ("ktest", KTEST),
        ("fuzz", FUZZ),
        ("fuzz-full", FUZZ_FULL),
        ("capdiff", CAPDIFF),
        ("bench-ipc", BENCH_IPC),
        ("vm-faultstorm", VM_FAULTSTORM),
        ("bench-stage2", BENCH_STAGE2),
        ("bench-populate", BENCH_POPULATE),
        ("vm-linux", VM_LINUX),
        ("vm-qsbr", VM_QSBR),
    ];

    /// The number for a mode name.
    pub fn from_name(name: &str) -> Option<u64> {
        ALL.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod raw;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use raw::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        for s in [
            Syscall::DebugLog,
            Syscall::Exit,
            Syscall::Call,
            Syscall::DebugSlot,
            Syscall::DebugFastPathCount,
        ] {
            assert_eq!(Syscall::from_raw(s as u64), Some(s));
        }
        assert_eq!(Syscall::from_raw(0), None);
        for n in 1..=14u64 {
            let e = Error::from_raw(n).expect("every code up to 14 is defined");
            assert_eq!(e as u64, n);
        }
        assert_eq!(Error::from_raw(0), None);
    }

    #[test]
    fn mode_names_are_unique() {
        for (i, (a, va)) in task_mode::ALL.iter().enumerate() {
            for (b, vb) in &task_mode::ALL[i + 1..] {
                assert_ne!(a, b);
                assert_ne!(va, vb);
            }
            assert_eq!(task_mode::from_name(a), Some(*va));
        }
    }
}
