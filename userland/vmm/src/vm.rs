//! Building a VM from capabilities and serving its exits.

use bulkhead_sys::cap::{rights, ObjectType};
use bulkhead_sys::{
    call, call_ret, fault, invocation, ipc, map_rights, vcpu_reg, Error, MessageInfo, Msg, Syscall,
};

/// The root CNode's own cap (boot tasks get it in slot 1).
const ROOT: u64 = 1;
/// The endpoint every vCPU's exits arrive on (badge = VM index << 8 | vCPU + 1).
const S_EP: u64 = 599;
/// Slots of VM `i`'s objects start at 600 + 100 i (clear of the boot caps).
const fn slot_base(i: u64) -> u64 {
    600 + 100 * i
}
/// Most VMs one VMM serves.
pub const MAX_VMS: u64 = 3;

/// Guest RAM of the test guest: IPA and size (log2).
pub const RAM_IPA: u64 = 0x4000_0000;
pub const RAM_BITS: u32 = 26;
/// Where the VMM sees guest RAM in its own address space (VM `i` at + i GiB).
pub const RAM_WINDOW: u64 = 0x80_0000_0000;
/// Table pool size (log2): 255 tables.
const POOL_BITS: u32 = 20;
/// A VM's own Untyped (log2 size): its VSpace, TCBs and VCPUs, so that a reset destroys
/// them with one revoke and makes them again in the same place.
const OBJECTS_BITS: u32 = 16;
/// The emulated PL011.
const UART: u64 = bulkhead_sys::vm_layout::UART;
/// Priority of vCPU threads (below the VMM's, so an exit runs the VMM at once).
const VCPU_PRIORITY: u64 = 100;

const PSCI_VERSION: u64 = 0x8400_0000;
const PSCI_CPU_OFF: u64 = 0x8400_0002;
const PSCI_CPU_ON: u64 = 0xc400_0003;
const PSCI_AFFINITY_INFO: u64 = 0xc400_0004;
const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;
const PSCI_FEATURES: u64 = 0x8400_000a;
const PSCI_NOT_SUPPORTED: u64 = -1i64 as u64;
const PSCI_INVALID: u64 = -2i64 as u64;
const PSCI_ALREADY_ON: u64 = -4i64 as u64;
const PSCI_INVALID_ADDRESS: u64 = -9i64 as u64;
const HVC_CHURN: u64 = 0xc600_0001;
const HVC_TEARDOWN: u64 = 0xc600_0002;
const HVC_BENCH: u64 = 0xc600_0003;
const HVC_NULL: u64 = 0xc600_0004;
const PSCI_SYSTEM_RESET: u64 = 0x8400_0009;

fn info(label: u64) -> MessageInfo {
    MessageInfo::new(label, 4)
}

/// Untyped Retype of one `ty` object of `bits` into root slot `dest`, from the first of
/// our Untyped caps that has room.
pub fn make(ty: ObjectType, bits: u32, dest: u64) -> Result<(), Error> {
    let [_, first, count, ..] = bulkhead_rt::boot_info();
    let mut last = Error::NotEnoughMemory;
    for ut in first..first + count {
        match call(
            ut,
            info(invocation::UNTYPED_RETYPE),
            [ty as u64 | (bits as u64) << 32, ROOT, 64 | 1 << 32, dest],
        ) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    defmt::warn!(
        "vmm: no Untyped memory of ours holds a new object of type {=u64}, 2^{=u32} bytes: {}",
        ty as u64,
        bits,
        last as u64
    );
    Err(last)
}

/// Untyped Retype of one `ty` object of `bits` from Untyped `ut` into root slot `dest`.
fn make_in(ut: u64, ty: ObjectType, bits: u32, dest: u64) -> Result<(), Error> {
    call(
        ut,
        info(invocation::UNTYPED_RETYPE),
        [ty as u64 | (bits as u64) << 32, ROOT, 64 | 1 << 32, dest],
    )
}

/// The kernel's accounting of one VM, read each time its objects have been made: its own
/// Untyped's watermark, its table pool, its VMID, and the VMIDs left free system-wide.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Accounting {
    pub watermark: u64,
    pub pool_free: u64,
    pub pool_total: u64,
    pub vmid: u64,
    pub vmids_free: u64,
}

/// What a VM runs, so that a reset can load it again.
#[derive(Clone, Copy)]
pub struct Boot {
    /// Its kernel image, where it goes, and its entry point.
    pub image: &'static [u8],
    pub image_at: u64,
    pub entry: u64,
    /// Its initramfs and device tree, and where they go.
    pub initrd: &'static [u8],
    pub initrd_at: u64,
    pub dtb: &'static [u8],
    pub dtb_at: u64,
}

/// One VM: its capabilities' slots, the state of its vCPUs and devices.
pub struct Vm {
    pub index: u64,
    pub name: &'static str,
    pub vcpus: u64,
    pub ram_bits: u32,
    pub on: [bool; 8],
    pub uart: crate::pl011::Pl011,
    pub gic: Option<crate::gic::Gic>,
    pub passed: bool,
    pub churns: u64,
    /// Benchmark mode: faults at [`VMM_AREA`] are resolved by mapping frames from slot
    /// [`S_BENCH_FRAMES`] on.
    pub bench_frames: u64,
    /// Powered off (its vCPUs are stopped).
    pub off: bool,
    /// What it boots (None: a test guest that cannot be reset).
    pub boot: Option<Boot>,
    /// Resets so far.
    pub resets: u64,
    /// The core of vCPU 0 (vCPU `i` runs on `first_core + i` where that core is online).
    pub first_core: u64,
    /// The accounting after the first boot, and the VMIDs free after the first reset
    /// (the other VMs of the system may still have been starting before that).
    pub first: Option<Accounting>,
    pub vmids_after_first_reset: Option<u64>,
    /// The system description asked this VMM to crash when its guest says so (the
    /// attack suite's stand-in for a VMM that a guest subverts: `bulkhead.crashvmm`).
    pub crash_on_request: bool,
    /// The guest may use this VMM's test hypercalls (stage-2 churn, teardown, benchmark
    /// reports): only the test guests' VMs; any other guest gets NOT_SUPPORTED for them.
    pub test_calls: bool,
    /// External aborts injected so far (only the first few are logged one by one).
    pub aborts: u64,
}

impl Vm {
    fn vspace(&self) -> u64 {
        slot_base(self.index)
    }
    fn pool(&self) -> u64 {
        slot_base(self.index) + 1
    }
    fn objects(&self) -> u64 {
        slot_base(self.index) + 3
    }
    fn ep(&self, i: u64) -> u64 {
        slot_base(self.index) + 10 + i
    }
    fn tcb(&self, i: u64) -> u64 {
        slot_base(self.index) + 20 + i
    }
    fn vcpu(&self, i: u64) -> u64 {
        slot_base(self.index) + 30 + i
    }
    fn window(&self) -> u64 {
        RAM_WINDOW + (self.index << 30)
    }
}

/// Where the benchmark guest takes faults this VMM resolves.
pub const VMM_AREA: u64 = 0x8000_0000;
/// First slot of the benchmark's 4 KiB frames.
pub const S_BENCH_FRAMES: u64 = 900;

/// Creates VM `index`'s objects (`2^ram_bits` bytes of RAM at [`RAM_IPA`], vCPU `i` on
/// core `first_core + i`, or core 0 where that core is not online); guest RAM is mapped
/// into the VMM's own space at [`Vm::window`] for loading.
pub fn build(
    index: u64,
    name: &'static str,
    vcpus: u64,
    ram_bits: u32,
    first_core: u64,
) -> Result<Vm, Error> {
    if index >= MAX_VMS || vcpus > 8 {
        return Err(Error::RangeError);
    }
    let mut vm = Vm {
        index,
        name,
        vcpus,
        ram_bits,
        on: [false; 8],
        uart: crate::pl011::Pl011::default(),
        gic: None,
        passed: false,
        churns: 0,
        bench_frames: 0,
        off: false,
        boot: None,
        resets: 0,
        first_core,
        first: None,
        vmids_after_first_reset: None,
        crash_on_request: false,
        test_calls: false,
        aborts: 0,
    };
    let ram = slot_base(index) + 2;
    // The largest object first: it may need a whole Untyped block of its own size.
    make(ObjectType::Frame, ram_bits, ram)?;
    if index == 0 {
        make(ObjectType::Endpoint, 0, S_EP)?;
    }
    make(ObjectType::TablePool, POOL_BITS, vm.pool())?;
    make(ObjectType::Untyped, OBJECTS_BITS, vm.objects())?;
    call(
        ram,
        info(invocation::FRAME_MAP),
        [
            invocation::SELF_SPACE,
            vm.window(),
            map_rights::READ | map_rights::WRITE,
            0,
        ],
    )?;
    vm.first = Some(make_objects(&vm)?);
    vm.on = [false; 8];
    Ok(vm)
}

/// Makes `vm`'s VSpace (configured with its pool, its RAM bound), and each vCPU's TCB and
/// VCPU, from the VM's own Untyped; returns the kernel's accounting afterwards.
fn make_objects(vm: &Vm) -> Result<Accounting, Error> {
    let (objects, ram) = (vm.objects(), slot_base(vm.index) + 2);
    make_in(objects, ObjectType::VSpace, 0, vm.vspace())?;
    let [vmid, vmids_free] = call_ret(
        vm.vspace(),
        info(invocation::VSPACE_CONFIGURE),
        [vm.pool(), 0, 0, 0],
    )?;
    call(
        vm.vspace(),
        info(invocation::VSPACE_BIND_REGION),
        [ram, RAM_IPA, map_rights::RWX, 0],
    )?;
    for i in 0..vm.vcpus {
        make_in(objects, ObjectType::Tcb, 0, vm.tcb(i))?;
        make_in(objects, ObjectType::Vcpu, 0, vm.vcpu(i))?;
        // Each vCPU's faults come with its own badge.
        call(
            ROOT,
            info(invocation::CNODE_MINT),
            [
                vm.ep(i),
                S_EP,
                64 | 64 << 8 | (rights::ALL as u64) << 16,
                vm.index << 8 | (i + 1),
            ],
        )?;
        call(
            vm.tcb(i),
            info(invocation::TCB_CONFIGURE),
            [ROOT, VCPU_PRIORITY, vm.ep(i), 0],
        )?;
        call(
            vm.tcb(i),
            info(invocation::TCB_SET_SPACE),
            [vm.vspace(), 0, 0, 0],
        )?;
        let core = vm.first_core + i;
        if call(
            vm.tcb(i),
            info(invocation::TCB_SET_AFFINITY),
            [core, 0, 0, 0],
        )
        .is_err()
        {
            call(vm.tcb(i), info(invocation::TCB_SET_AFFINITY), [0, 0, 0, 0])?;
        }
        call(
            vm.vcpu(i),
            info(invocation::VCPU_BIND_TCB),
            [vm.tcb(i), 0, 0, 0],
        )?;
        call(
            vm.vcpu(i),
            info(invocation::VCPU_WRITE_SYSREG),
            [vcpu_reg::VMPIDR, i, 0, 0],
        )?;
    }
    let [watermark, _] = call_ret(objects, info(invocation::UNTYPED_INFO), [0; 4])?;
    let [pool_free, pool_total] = call_ret(vm.pool(), info(invocation::POOL_INFO), [0; 4])?;
    Ok(Accounting {
        watermark,
        pool_free,
        pool_total,
        vmid,
        vmids_free,
    })
}

/// Destroys `vm`'s VSpace, TCBs and VCPUs (its RAM, pool and the VMM's window on the RAM
/// stay) and makes them again, checking that the kernel's accounting is what it was after
/// the first boot: the same watermark of the VM's Untyped, every table back in the pool,
/// the same VMID, and (from the second reset on) as many VMIDs free as after the first.
fn remake(vm: &mut Vm) -> Result<(), &'static str> {
    for i in 0..vm.vcpus {
        call(ROOT, info(invocation::CNODE_DELETE), [vm.ep(i), 0, 64, 0])
            .map_err(|_| "deleting a vCPU's endpoint cap")?;
    }
    call(
        ROOT,
        info(invocation::CNODE_REVOKE),
        [vm.objects(), 0, 64, 0],
    )
    .map_err(|_| "revoking the VM's objects")?;
    let now = make_objects(vm).map_err(|_| "making the VM's objects again")?;
    let first = vm.first.ok_or("no first accounting")?;
    let vmids = *vm.vmids_after_first_reset.get_or_insert(now.vmids_free);
    defmt::info!(
        "vmm: {=str}: restart {=u64}: untyped watermark {=u64:#x}, table pool {=u64} of {=u64} free, VMID {=u64}, {=u64} VMIDs free",
        vm.name,
        vm.resets,
        now.watermark,
        now.pool_free,
        now.pool_total,
        now.vmid,
        now.vmids_free
    );
    if now.watermark != first.watermark {
        return Err("the VM's Untyped watermark moved");
    }
    if now.pool_free != now.pool_total || now.pool_total != first.pool_total {
        return Err("tables of the old VSpace are missing from the pool");
    }
    if now.vmid != first.vmid || now.vmids_free != vmids {
        return Err("a VMID leaked");
    }
    defmt::info!(
        "vmm: {=str}: restart {=u64}: kernel accounting as after the first boot",
        vm.name,
        vm.resets
    );
    Ok(())
}

/// Copies `data` into guest RAM at IPA `at` through the window (bounds checked).
pub fn copy_in(vm: &Vm, at: u64, data: &[u8]) -> Result<(), Error> {
    let ram_end = RAM_IPA + (1 << vm.ram_bits);
    if at < RAM_IPA || at.saturating_add(data.len() as u64) > ram_end {
        return Err(Error::RangeError);
    }
    let dst = vm.window() + (at - RAM_IPA);
    // SAFETY: the destination range lies in guest RAM (checked above), which is mapped
    // read/write at RAM_WINDOW in our own address space and used by nothing else before
    // the guest starts; it cannot overlap `data` (our image or stack).
    unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), dst as *mut u8, data.len()) };
    Ok(())
}

/// Copies an ELF guest into guest RAM through the window; returns its entry point.
pub fn load(vm: &Vm, elf: &[u8]) -> Result<u64, Error> {
    let e = kcore::elf::Elf::parse(elf).map_err(|_| Error::InvalidArgument)?;
    for s in e.segments() {
        if s.mem_size < s.data.len() as u64 {
            return Err(Error::InvalidArgument);
        }
        copy_in(vm, s.vaddr, s.data)?;
    }
    Ok(e.entry())
}

/// Starts vCPU `i` at `pc` with `x0 = arg`.
pub fn start(vm: &mut Vm, i: u64, pc: u64, arg: u64) -> Result<(), Error> {
    call(
        vm.tcb(i),
        info(invocation::TCB_WRITE_REGISTERS),
        [pc, 0, arg, 0],
    )?;
    call(vm.tcb(i), info(invocation::TCB_RESUME), [0; 4])?;
    vm.on[i as usize] = true;
    Ok(())
}

/// What to do after an exit.
pub enum After {
    /// Reply with this message (resumes the vCPU).
    Reply(Msg),
    /// No reply (the vCPU stays stopped).
    Hold,
    /// The VM is over: its vCPUs stop; `true` if it ended as it should.
    Off(bool),
    /// The VMM cannot go on: it ends with this status.
    End(u64),
}

fn results(x0: u64) -> After {
    After::Reply(Msg {
        info: MessageInfo::new(fault::REPLY_RESULTS, 4).0,
        mr: [x0, 0, 0, 0],
        badge: 0,
    })
}

fn emulated(reg: u64, value: u64) -> After {
    After::Reply(Msg {
        info: MessageInfo::new(fault::REPLY_EMULATED, 2).0,
        mr: [reg, value, 0, 0],
        badge: 0,
    })
}

fn retrying(f: impl Fn() -> Result<[u64; 2], Error>) -> Result<[u64; 2], Error> {
    loop {
        match f() {
            Err(Error::Busy) => continue,
            r => return r,
        }
    }
}

fn psci(vm: &mut Vm, vcpu: u64, x: [u64; 4]) -> After {
    match x[0] {
        PSCI_VERSION => results(0x1_0001),
        PSCI_FEATURES => results(match x[1] {
            PSCI_VERSION | PSCI_CPU_ON | PSCI_CPU_OFF | PSCI_AFFINITY_INFO | PSCI_SYSTEM_OFF
            | PSCI_SYSTEM_RESET | PSCI_FEATURES => 0,
            _ => PSCI_NOT_SUPPORTED,
        }),
        // The target is in MPIDR affinity format (every other bit RES0); our vCPUs have
        // Aff0 = their number and Aff1..3 = 0 (PSCI, Arm DEN 0022, CPU_ON and
        // AFFINITY_INFO: a target naming no CPU is INVALID_PARAMETERS).
        PSCI_CPU_ON => {
            let t = x[1] & 0xff;
            if t >= vm.vcpus || x[1] >> 8 != 0 {
                results(PSCI_INVALID)
            } else if !entry_ok(vm, x[2]) {
                // PSCI 1.0: an entry point known to be invalid is INVALID_ADDRESS.
                results(PSCI_INVALID_ADDRESS)
            } else if vm.on[t as usize] {
                results(PSCI_ALREADY_ON)
            } else {
                match start(vm, t, x[2], x[3]) {
                    Ok(()) => results(0),
                    Err(_) => results(PSCI_INVALID),
                }
            }
        }
        PSCI_CPU_OFF => {
            vm.on[vcpu as usize] = false;
            After::Hold
        }
        PSCI_AFFINITY_INFO => {
            let t = x[1] & 0xff;
            if t >= vm.vcpus || x[1] >> 8 != 0 {
                results(PSCI_INVALID)
            } else {
                results(!vm.on[t as usize] as u64)
            }
        }
        PSCI_SYSTEM_OFF => {
            let name = vm.name;
            vm.uart.flush(&mut |l| {
                console_line(name, l, &mut false);
            });
            defmt::info!("vmm: {=str}: the guest powered its VM off", name);
            After::Off(vm.passed)
        }
        HVC_CHURN | HVC_TEARDOWN | HVC_NULL | HVC_BENCH if !vm.test_calls => {
            results(PSCI_NOT_SUPPORTED)
        }
        HVC_CHURN => {
            vm.churns += 1;
            let r = match x[1] {
                1 => retrying(|| {
                    call_ret(
                        vm.vspace(),
                        info(invocation::VSPACE_UNMAP_RANGE),
                        [x[2], x[3], 0, 0],
                    )
                }),
                2 => retrying(|| {
                    call(
                        vm.vspace(),
                        info(invocation::VSPACE_COLLAPSE),
                        [x[2], x[3], 0, 0],
                    )
                    .map(|()| [0; 2])
                }),
                3 => retrying(|| {
                    call(
                        vm.vspace(),
                        info(invocation::VSPACE_SPLIT),
                        [x[2], x[3], 0, 0],
                    )
                    .map(|()| [0; 2])
                }),
                4 => start_dirty_log(vm),
                5 => return results(harvest_dirty(vm, x[2], x[3])),
                6 => {
                    return results(
                        call_ret(vm.pool(), info(invocation::POOL_INFO), [0; 4])
                            .map_or(u64::MAX, |r| r[0]),
                    )
                }
                _ => Err(Error::InvalidArgument),
            };
            match r {
                Ok(_) => results(0),
                Err(e) => {
                    defmt::warn!(
                        "vmm: churn op {=u64} at {=u64:#x} failed: {}",
                        x[1],
                        x[2],
                        e as u64
                    );
                    results(e as u64)
                }
            }
        }
        HVC_TEARDOWN => teardown(vm),
        PSCI_SYSTEM_RESET => reset(vm),
        HVC_NULL => results(0),
        HVC_BENCH => {
            let name = match x[1] {
                1 => "stage2-fault-kernel",
                2 => "stage2-fault-vmm",
                3 => "stage2-load-plain",
                5 => "vmexit-hvc-roundtrip",
                6 => "vmexit-mmio-read",
                11 => "stage2-populate-1vcpu",
                12 => "stage2-populate-2vcpu",
                14 => "stage2-populate-4vcpu",
                _ => "unknown",
            };
            defmt::info!("BENCH {=str} {=u64}", name, x[2]);
            results(0)
        }
        _ => results(PSCI_NOT_SUPPORTED),
    }
}

/// Whether a vCPU may start at IPA `pc`: a word-aligned address in the VM's RAM.
fn entry_ok(vm: &Vm, pc: u64) -> bool {
    pc.is_multiple_of(4) && (RAM_IPA..RAM_IPA + (1 << vm.ram_bits)).contains(&pc)
}

/// Injected aborts logged one by one; after that, one line per [`ABORT_LOG_EVERY`].
const ABORTS_LOGGED: u64 = 16;
const ABORT_LOG_EVERY: u64 = 4096;

/// Counts an injected abort; true if this one is to be logged on its own line (a guest
/// must not be able to flood the log).
fn log_abort(vm: &mut Vm) -> bool {
    vm.aborts += 1;
    if vm.aborts == ABORTS_LOGGED + 1 {
        defmt::warn!(
            "vmm: {=str}: more external aborts: logging one in {=u64} from now on",
            vm.name,
            ABORT_LOG_EVERY
        );
    }
    vm.aborts <= ABORTS_LOGGED || vm.aborts.is_multiple_of(ABORT_LOG_EVERY)
}

/// The dirty bitmap of the test guest's RAM (4 KiB: a bit per page of up to 128 MiB), in
/// slot 899 and at this address of the VMM's own space.
const S_DIRTY: u64 = 899;
const DIRTY_WINDOW: u64 = 0x90_0000_0000;

/// Turns on dirty logging of the VM's RAM region (write-protecting it).
fn start_dirty_log(vm: &mut Vm) -> Result<[u64; 2], Error> {
    if make(ObjectType::Frame4K, 0, S_DIRTY).is_ok() {
        call(
            S_DIRTY,
            info(invocation::FRAME_MAP),
            [
                invocation::SELF_SPACE,
                DIRTY_WINDOW,
                map_rights::READ | map_rights::WRITE,
                0,
            ],
        )?;
    }
    call_ret(
        vm.vspace(),
        info(invocation::VSPACE_LOG_DIRTY),
        [RAM_IPA, S_DIRTY, 0, 0],
    )
}

/// Takes the dirty bits (clearing them), write-protects the region again, and returns how
/// many pages of `[ipa, ipa + len)` were written since the last harvest.
fn harvest_dirty(vm: &mut Vm, ipa: u64, len: u64) -> u64 {
    use core::sync::atomic::{AtomicU64, Ordering};
    let (first, last) = ((ipa - RAM_IPA) / 4096, (ipa + len - RAM_IPA) / 4096);
    let mut count = 0;
    for w in 0..512u64 {
        // SAFETY: the bitmap frame is mapped read/write at DIRTY_WINDOW (4 KiB: 512
        // words); the kernel sets bits in it atomically, so it is read and cleared
        // atomically too.
        let word = unsafe { &*((DIRTY_WINDOW + 8 * w) as *const AtomicU64) };
        let bits = word.swap(0, Ordering::AcqRel);
        for b in 0..64 {
            let page = w * 64 + b;
            if bits & (1 << b) != 0 && (first..last).contains(&page) {
                count += 1;
            }
        }
    }
    let _ = call_ret(
        vm.vspace(),
        info(invocation::VSPACE_LOG_DIRTY),
        [RAM_IPA, S_DIRTY, 0, 0],
    );
    count
}

/// Destroys the VSpace while the other vCPUs are still faulting on it, then checks that
/// every table went back to the pool.
fn teardown(vm: &mut Vm) -> After {
    let running = vm.on[1..vm.vcpus as usize].iter().filter(|o| **o).count();
    if let Err(e) = call(
        ROOT,
        info(invocation::CNODE_DELETE),
        [vm.vspace(), 0, 64, 0],
    ) {
        defmt::error!("vmm: deleting the VSpace failed: {}", e as u64);
        return After::End(1);
    }
    let [free, total] = match call_ret(vm.pool(), info(invocation::POOL_INFO), [0; 4]) {
        Ok(v) => v,
        Err(_) => return After::End(1),
    };
    defmt::info!(
        "vmm: VSpace destroyed under {=usize} running vCPUs; table pool: {=u64} of {=u64} free",
        running,
        free,
        total
    );
    let ok = free == total && vm.passed;
    if ok {
        defmt::info!(
            "vmm: fault storm over: {=u64} churn operations, every table back in its pool",
            vm.churns
        );
    }
    After::Off(ok)
}

/// The line a guest prints to ask a VMM built with `crash_on_request` to crash.
const CRASH_LINE: &str = "bulkhead-guest: crash the VMM now";

/// Prints a guest's console line; true if it is [`CRASH_LINE`].
fn console_line(name: &str, s: &str, passed: &mut bool) -> bool {
    defmt::info!("{=str}| {=str}", name, s);
    if s.starts_with("faultstorm: PASS") {
        *passed = true;
    }
    s == CRASH_LINE
}

/// Crashes this VMM: a read of an address its space does not map (a stage-2 fault the
/// kernel ends the task for, like a VMM bug would).
fn crash() -> ! {
    defmt::warn!("vmm: crashing on purpose (bulkhead.crashvmm)");
    // SAFETY: deliberately reads an unmapped address: the kernel's fault handling ends
    // this task before the read completes; nothing of ours is touched.
    unsafe { core::ptr::read_volatile(0x10 as *const u64) };
    loop {
        core::hint::spin_loop();
    }
}

fn mmio(vm: &mut Vm, vcpu: u64, m: &Msg) -> After {
    let name = vm.name;
    let (ipa, esr, value) = (m.mr[1], m.mr[2], m.mr[3]);
    let isv = esr & (1 << 24) != 0;
    let write = esr & (1 << 6) != 0;
    let rt = (esr >> 16) & 0x1f;
    // Access size (SAS), sign extension (SSE), 64-bit register (SF).
    let size = 1u64 << ((esr >> 22) & 3);
    let mask = if size == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * size)) - 1
    };
    let value = value & mask;
    let reply_read = |v: u64| {
        let mut v = v & mask;
        if esr & (1 << 21) != 0 && size < 8 && v & (1 << (8 * size - 1)) != 0 {
            v |= !mask;
            if esr & (1 << 15) == 0 {
                v &= 0xffff_ffff;
            }
        }
        emulated(if rt == 31 { fault::NO_REGISTER } else { rt }, v)
    };
    if vm.bench_frames > 0 && (VMM_AREA..VMM_AREA + (1 << 21)).contains(&ipa) {
        // Resolve the fault by mapping the next frame there, then retry the access.
        let slot = S_BENCH_FRAMES + (vm.bench_frames - 1);
        vm.bench_frames += 1;
        let r = call(
            slot,
            info(invocation::FRAME_MAP),
            [
                vm.vspace(),
                ipa & !0xfff,
                map_rights::READ | map_rights::WRITE,
                0,
            ],
        );
        if let Err(e) = r {
            defmt::error!(
                "vmm: mapping a frame at {=u64:#x} failed: {}",
                ipa,
                e as u64
            );
            return After::End(1);
        }
        return After::Reply(Msg::default());
    }
    use bulkhead_sys::vm_layout::{GICD, GICR};
    if isv {
        if let Some(gic) = vm.gic.as_mut() {
            if (GICD..GICD + 0x1_0000).contains(&ipa) {
                if write {
                    gic.dist_write(ipa - GICD, value, size);
                    return emulated(fault::NO_REGISTER, 0);
                }
                return reply_read(gic.dist_read(ipa - GICD, size));
            }
            if (GICR..GICR + 0x2_0000 * vm.vcpus).contains(&ipa) {
                if write {
                    gic.redist_write(ipa - GICR, value, size);
                    return emulated(fault::NO_REGISTER, 0);
                }
                return reply_read(gic.redist_read(ipa - GICR, size));
            }
        }
    }
    if !isv || !(UART..UART + 0x1000).contains(&ipa) {
        if log_abort(vm) {
            defmt::warn!(
                "vmm: {=str}: access at IPA {=u64:#x} (pc {=u64:#x}) hits no RAM and no device: external abort injected ({=u64} so far)",
                name,
                ipa,
                m.mr[0],
                vm.aborts
            );
        }
        return inject_abort(vm, vcpu, m, false);
    }
    if write {
        let passed = &mut vm.passed;
        let mut asked = false;
        vm.uart.write(ipa - UART, value, &mut |l| {
            asked |= console_line(name, l, passed);
        });
        if asked && vm.crash_on_request {
            crash();
        }
        emulated(fault::NO_REGISTER, 0)
    } else {
        reply_read(vm.uart.read(ipa - UART))
    }
}

/// A trapped system-register access (ISS: Op0 [21:20], Op2 [19:17], Op1 [16:14],
/// CRn [13:10], Rt [9:5], CRm [4:1], direction [0], Arm ARM D17.2.37). ICC_SGI1R_EL1
/// writes send SGIs; other registers read as zero and ignore writes.
fn sysreg(vm: &mut Vm, vcpu: u64, m: &Msg) -> After {
    let iss = m.mr[1];
    let read = iss & 1 != 0;
    let rt = (iss >> 5) & 0x1f;
    let key = iss & 0x3f_fc1e; // Op0, Op2, Op1, CRn, CRm
    let sgi1r = (3 << 20) | (5 << 17) | (12 << 10) | (11 << 1);
    if !read && key == sgi1r {
        if let Some(gic) = vm.gic.as_ref() {
            let (targets, intid) = gic.sgi_targets(vcpu as usize, m.mr[3]);
            for t in 0..vm.vcpus {
                if targets & (1 << t) != 0 {
                    let prio = gic.priority(t as usize, intid) as u64;
                    let _ = call(
                        vm.vcpu(t),
                        info(invocation::VCPU_INJECT_IRQ),
                        [intid as u64, prio, 0, 0],
                    );
                }
            }
        }
    }
    emulated(
        if read && rt != 31 {
            rt
        } else {
            fault::NO_REGISTER
        },
        0,
    )
}

/// Injects a synchronous external abort into vCPU `vcpu` of `vm` for the access of
/// fault message `m`, the way the architecture takes one to EL1 (Arm ARM D1.10:
/// ESR_EL1, ELR_EL1, SPSR_EL1 saved; PSTATE to EL1h with DAIF masked; the vector of the
/// level it came from), and lets it run there. FAR_EL1 is not known to the VMM (it gets
/// the IPA), so the syndrome says so (FnV).
fn inject_abort(vm: &mut Vm, vcpu: u64, m: &Msg, instruction: bool) -> After {
    let tcb = vm.tcb(vcpu);
    let v = vm.vcpu(vcpu);
    let reg = |r: u64| {
        call_ret(tcb, info(invocation::TCB_READ_REGISTER), [r, 0, 0, 0]).map_or(0, |x| x[0])
    };
    let spsr = reg(bulkhead_sys::reg::SPSR);
    let pc = m.mr[0];
    let from_el0 = spsr & 0xf == 0;
    let vbar = call_ret(
        v,
        info(invocation::VCPU_READ_SYSREG),
        [vcpu_reg::VBAR_EL1, 0, 0, 0],
    )
    .map_or(0, |x| x[0]);
    let offset = if from_el0 {
        0x400
    } else if spsr & 1 != 0 {
        0x200
    } else {
        0
    };
    let ec: u64 = match (instruction, from_el0) {
        (true, true) => 0x20,
        (true, false) => 0x21,
        (false, true) => 0x24,
        (false, false) => 0x25,
    };
    // IL, FnV, synchronous external abort; WnR as the access was.
    let esr = (ec << 26) | (1 << 25) | (m.mr[2] & (1 << 6)) | (1 << 10) | 0x10;
    let sys = |r: u64, val: u64| call(v, info(invocation::VCPU_WRITE_SYSREG), [r, val, 0, 0]);
    let wr = |r: u64, val: u64| call(tcb, info(invocation::TCB_WRITE_REGISTER), [r, val, 0, 0]);
    let ok = sys(vcpu_reg::ESR_EL1, esr).is_ok()
        && sys(vcpu_reg::ELR_EL1, pc).is_ok()
        && sys(vcpu_reg::SPSR_EL1, spsr).is_ok()
        && sys(vcpu_reg::FAR_EL1, 0).is_ok()
        && wr(bulkhead_sys::reg::SPSR, 0x3c5).is_ok()
        && wr(bulkhead_sys::reg::PC, vbar + offset).is_ok();
    if !ok {
        defmt::error!("vmm: {=str}: injecting an abort failed", vm.name);
        return After::Off(false);
    }
    // Resume where the registers now say (the guest's vector).
    After::Reply(Msg::default())
}

/// Stops every vCPU of `vm`.
fn stop_all(vm: &mut Vm) {
    for i in 0..vm.vcpus {
        let _ = call(vm.tcb(i), info(invocation::TCB_SUSPEND), [0; 4]);
        vm.on[i as usize] = false;
    }
}

/// Writes `n` into the `bulkhead.boot=NNNN` word of the guest's command line in its
/// device tree in guest RAM (how the guest learns how often its VM booted before).
pub fn write_boot_count(vm: &Vm, b: &Boot, n: u64) -> Result<(), Error> {
    const WORD: &[u8] = b"bulkhead.boot=";
    if let Some(at) = b.dtb.windows(WORD.len()).position(|w| w == WORD) {
        let n = n.min(9999);
        let digits = [
            b'0' + (n / 1000) as u8,
            b'0' + (n / 100 % 10) as u8,
            b'0' + (n / 10 % 10) as u8,
            b'0' + (n % 10) as u8,
        ];
        copy_in(vm, b.dtb_at + (at + WORD.len()) as u64, &digits)?;
    }
    Ok(())
}

/// PSCI SYSTEM_RESET: the VM starts again from its images with new kernel objects (its
/// vCPUs are stopped, its VSpace, TCBs and VCPUs destroyed and made again, the kernel's
/// accounting checked, the devices reset); a VM without images (a test guest) is powered
/// off instead.
fn reset(vm: &mut Vm) -> After {
    let Some(b) = vm.boot else {
        return After::Off(vm.passed);
    };
    stop_all(vm);
    vm.resets += 1;
    if let Err(why) = remake(vm) {
        defmt::error!(
            "vmm: {=str}: restart {=u64}: {=str}",
            vm.name,
            vm.resets,
            why
        );
        return After::Off(false);
    }
    vm.uart = crate::pl011::Pl011::default();
    if vm.gic.is_some() {
        vm.gic = Some(crate::gic::Gic::new(vm.vcpus as usize));
    }
    let go = || -> Result<(), Error> {
        copy_in(vm, b.image_at, b.image)?;
        copy_in(vm, b.initrd_at, b.initrd)?;
        copy_in(vm, b.dtb_at, b.dtb)?;
        write_boot_count(vm, &b, vm.resets)?;
        Ok(())
    };
    if go().is_err() || start(vm, 0, b.entry, b.dtb_at).is_err() {
        defmt::error!("vmm: {=str}: restarting failed", vm.name);
        return After::Off(false);
    }
    defmt::info!(
        "vmm: {=str}: the guest reset its VM; restarted (reset {=u64})",
        vm.name,
        vm.resets
    );
    After::Hold
}

/// Serves the exits of every VM until all are off; returns the VMM's exit status (0 when
/// every VM ended as it should).
pub fn serve(vms: &mut [Vm]) -> u64 {
    let mut status = 0;
    let (mut err, mut m) = ipc(Syscall::Recv, S_EP, &Msg::default());
    loop {
        if err != 0 {
            defmt::error!("vmm: receive failed: {=u64}", err);
            return 1;
        }
        let (index, vcpu) = (m.badge >> 8, (m.badge & 0xff).wrapping_sub(1));
        let Some(vm) = vms.get_mut(index as usize).filter(|vm| vcpu < vm.vcpus) else {
            defmt::error!("vmm: message with unknown badge {=u64}", m.badge);
            return 1;
        };
        let name = vm.name;
        let after = match MessageInfo(m.info).label() {
            fault::HYPERCALL | fault::SMC => psci(vm, vcpu, m.mr),
            fault::VM_DATA_ABORT => mmio(vm, vcpu, &m),
            fault::VM_INSTRUCTION_ABORT => {
                if log_abort(vm) {
                    defmt::warn!(
                        "vmm: {=str}: instruction fetch at IPA {=u64:#x} outside RAM: external abort injected",
                        name,
                        m.mr[1]
                    );
                }
                inject_abort(vm, vcpu, &m, true)
            }
            fault::SYSREG => sysreg(vm, vcpu, &m),
            other => {
                defmt::error!(
                    "vmm: {=str} vCPU {=u64}: exit {=u64} (pc {=u64:#x}, {=u64:#x}, ESR {=u64:#x})",
                    name,
                    vcpu,
                    other,
                    m.mr[0],
                    m.mr[1],
                    m.mr[2]
                );
                let el1 = |r: u64| {
                    call_ret(
                        vm.vcpu(vcpu),
                        info(invocation::VCPU_READ_SYSREG),
                        [r, 0, 0, 0],
                    )
                    .map_or(0, |v| v[0])
                };
                defmt::error!(
                    "vmm: {=str} vCPU {=u64}: the guest's last exception: ESR_EL1 {=u64:#x}, ELR_EL1 {=u64:#x}, FAR_EL1 {=u64:#x}; message info {=u64:#x}, pc {=u64:#x}",
                    name,
                    vcpu,
                    el1(vcpu_reg::ESR_EL1),
                    el1(vcpu_reg::ELR_EL1),
                    el1(vcpu_reg::FAR_EL1),
                    m.info,
                    call_ret(vm.tcb(vcpu), info(invocation::TCB_READ_REGISTER), [32, 0, 0, 0])
                        .map_or(0, |v| v[0])
                );
                After::Off(false)
            }
        };
        (err, m) = match after {
            After::Reply(r) => ipc(Syscall::ReplyRecv, S_EP, &r),
            After::Hold => ipc(Syscall::Recv, S_EP, &Msg::default()),
            After::Off(ok) => {
                stop_all(vm);
                vm.off = true;
                if !ok {
                    status = 1;
                }
                defmt::info!(
                    "vmm: VM {=str} is off{=str}; {=u64} external aborts injected in all",
                    name,
                    if ok { "" } else { " (it failed)" },
                    vm.aborts
                );
                if vms.iter().all(|v| v.off) {
                    return status;
                }
                ipc(Syscall::Recv, S_EP, &Msg::default())
            }
            After::End(status) => return status,
        };
    }
}

static FAULTSTORM: &[u8] = include_bytes!(env!("FAULTSTORM_ELF"));

/// The QSBR liveness VM: the fault-storm guest's mode 3 (vCPU 0 on core 0 beside this
/// VMM, vCPU 1 spinning on core 1, cores 2 and 3 idle).
pub fn qsbr() -> u64 {
    if FAULTSTORM.is_empty() {
        defmt::error!("vmm: built without the test guest (BULKHEAD_GUEST_FAULTSTORM)");
        return 2;
    }
    let run = || -> Result<u64, Error> {
        let mut vm = build(0, "qsbr", 4, RAM_BITS, 0)?;
        vm.test_calls = true;
        let entry = load(&vm, FAULTSTORM)?;
        start(&mut vm, 0, entry, 3)?;
        Ok(serve(core::slice::from_mut(&mut vm)))
    };
    run().unwrap_or_else(|e| {
        defmt::error!("vmm: building the QSBR VM failed: {}", e as u64);
        1
    })
}

/// The stage-2 fault benchmark VM: one vCPU, the guest's bench mode.
pub fn bench(frames: u64) -> u64 {
    if FAULTSTORM.is_empty() {
        defmt::error!("vmm: built without the test guest (BULKHEAD_GUEST_FAULTSTORM)");
        return 2;
    }
    let run = || -> Result<u64, Error> {
        let mut vm = build(0, "bench", 1, RAM_BITS, 0)?;
        for i in 0..frames {
            make(ObjectType::Frame4K, 0, S_BENCH_FRAMES + i)?;
        }
        vm.bench_frames = 1;
        vm.passed = true;
        vm.test_calls = true;
        let entry = load(&vm, FAULTSTORM)?;
        start(&mut vm, 0, entry, 1)?;
        Ok(serve(core::slice::from_mut(&mut vm)))
    };
    run().unwrap_or_else(|e| {
        defmt::error!("vmm: building the benchmark VM failed: {}", e as u64);
        1
    })
}

/// The populate benchmark VM: 4 vCPUs fault in guest RAM (the guest's mode 2).
pub fn populate() -> u64 {
    let run = || -> Result<u64, Error> {
        let mut vm = build(0, "populate", 4, RAM_BITS, 0)?;
        vm.passed = true;
        vm.test_calls = true;
        let entry = load(&vm, FAULTSTORM)?;
        start(&mut vm, 0, entry, 2)?;
        Ok(serve(core::slice::from_mut(&mut vm)))
    };
    run().unwrap_or_else(|e| {
        defmt::error!("vmm: building the populate VM failed: {}", e as u64);
        1
    })
}

/// The fault-storm test VM.
pub fn faultstorm() -> u64 {
    if FAULTSTORM.is_empty() {
        defmt::error!("vmm: built without the fault-storm guest (BULKHEAD_GUEST_FAULTSTORM)");
        return 2;
    }
    let run = || -> Result<u64, Error> {
        let mut vm = build(0, "faultstorm", 4, RAM_BITS, 0)?;
        vm.test_calls = true;
        let entry = load(&vm, FAULTSTORM)?;
        defmt::info!(
            "vmm: VM faultstorm: 4 vCPUs, {=u64} MiB of RAM at IPA {=u64:#x} bound as a region, entry {=u64:#x}",
            1u64 << (RAM_BITS - 20),
            RAM_IPA,
            entry
        );
        start(&mut vm, 0, entry, 0)?;
        Ok(serve(core::slice::from_mut(&mut vm)))
    };
    match run() {
        Ok(s) => s,
        Err(e) => {
            defmt::error!("vmm: building the VM failed: {}", e as u64);
            1
        }
    }
}
