//! Threads, run queues and endpoint IPC, over object memory.
//!
//! TCBs and endpoints are objects in retyped memory; this module reads and writes their
//! fields through [`ObjMem`] (word access by physical address), so the same code runs
//! on the kernel's identity map and on host test memory. The kernel holds its scheduler
//! lock around every call; nothing here blocks or allocates.
//!
//! IPC follows seL4's synchronous endpoints: a sender meets a waiting receiver (or
//! queues), a receiver meets a waiting sender (or queues); Call additionally leaves the
//! caller blocked until the receiver replies. A message is the message info word (x1) and
//! message registers 0..3 (x2..x5); the receiver also gets the badge of the sender's cap
//! (x6) and 0 in x0. Queues are FIFO, linked through the TCBs.

/// Word access to kernel objects.
pub trait ObjMem {
    /// Reads the word at `addr`.
    fn rd(&self, addr: u64) -> u64;
    /// Writes the word at `addr`.
    fn wr(&mut self, addr: u64, v: u64);
    /// The parts of a message beyond the registers: message registers 4 and up (IPC
    /// buffer to IPC buffer) and, if `caps_ok`, a capability. Returns the message info
    /// the receiver gets (length and cap count as delivered). The default delivers
    /// registers only.
    fn extend(&mut self, _from: u64, _to: u64, info: u64, _caps_ok: bool) -> u64 {
        msg::delivered(info, msg::length(info).min(msg::REGISTER_MRS), 0)
    }
}

/// Message info layout: label in bits 63:12, capability count in bits 8:7, length in
/// message registers in bits 6:0. MR0..MR3 travel in x2..x5, MR4.. in the IPC buffer.
pub mod msg {
    /// Message registers carried in CPU registers.
    pub const REGISTER_MRS: u64 = 4;
    /// Most message registers (the rest are in the IPC buffer).
    pub const MAX_MRS: u64 = 64;
    /// IPC buffer word where the first capability to send is named (an index at depth
    /// 64 in the sender's CSpace).
    pub const BUF_CAP: u64 = 64;
    /// IPC buffer word naming the slot (depth 64 in the receiver's CSpace) that receives
    /// a transferred capability; 0 = none.
    pub const BUF_RECV_SLOT: u64 = 67;
    /// Length field.
    pub const fn length(info: u64) -> u64 {
        info & 0x7f
    }
    /// Capability count field.
    pub const fn caps(info: u64) -> u64 {
        (info >> 7) & 3
    }
    /// `info` with its length and cap count replaced.
    pub const fn delivered(info: u64, length: u64, caps: u64) -> u64 {
        (info & !0x1ff) | ((caps & 3) << 7) | (length & 0x7f)
    }
}

/// TCB field offsets (the object is 2 KiB; the register context comes first so the
/// kernel's entry code can save straight into it).
pub mod tcb {
    /// Saved registers: x0..x30, SP_EL0, ELR, SPSR (34 words).
    pub const CTX: u64 = 0;
    /// [`super::State`].
    pub const STATE: u64 = 0x110;
    /// Endpoint it is queued on.
    pub const BLOCKED_ON: u64 = 0x118;
    /// Next in its queue (run queue or endpoint queue).
    pub const NEXT: u64 = 0x120;
    /// Previous in its queue.
    pub const PREV: u64 = 0x128;
    /// Priority (0..=255).
    pub const PRIO: u64 = 0x130;
    /// The caller waiting for this thread's reply (0 = none).
    pub const CALLER: u64 = 0x138;
    /// While queued to send: the badge of the cap used.
    pub const SEND_BADGE: u64 = 0x140;
    /// While queued to send: 1 if it was a Call.
    pub const SEND_IS_CALL: u64 = 0x148;
    /// While blocked on reply: the thread that owes the reply.
    pub const REPLY_FROM: u64 = 0x150;
    /// Stage-2 translation of its address space (VTTBR_EL2 value).
    pub const VTTBR: u64 = 0x158;
    /// Index (depth 64 in its CSpace) of the endpoint its faults go to; 0 = none.
    pub const FAULT_EP: u64 = 0x160;
    /// 1 while a fault message of this thread is outstanding (queued, or waiting for the
    /// handler's reply).
    pub const FAULTED: u64 = 0x168;
    /// The fault message: info word and MR0..MR3 (5 words).
    pub const FAULT_MSG: u64 = 0x1a0;
    /// Its EL1 physical timer (CNTP_CTL_EL0, CNTP_CVAL_EL0), saved while it is not on
    /// the CPU: each thread has its own timer, so no thread sees another's.
    pub const TIMER_CTL: u64 = 0x170;
    /// See [`TIMER_CTL`].
    pub const TIMER_CVAL: u64 = 0x178;
    /// The time partition it belongs to (it runs only in that partition's windows).
    pub const PARTITION: u64 = 0x1c8;
    /// The core it runs on.
    pub const CORE: u64 = 0x1d0;
    /// Address (in its address space) of its IPC buffer, 0 = none.
    pub const IPC_BUF: u64 = 0x1d8;
    /// While sending: 1 if the endpoint cap used has the Grant right (a capability in the
    /// message may be transferred).
    pub const SEND_GRANT: u64 = 0x1e0;
    /// The VCPU bound to this thread (0 = none): the thread then runs a guest at EL1.
    pub const VCPU: u64 = 0x1e8;
    /// The VSpace object whose stage-2 it runs in (0 = a boot task's kernel-built one).
    pub const VSPACE: u64 = 0x1f0;
    /// The payload slot of the boot task the thread belongs to (its log tag).
    pub const TASK: u64 = 0x1f8;
    /// Saved FP/SIMD registers (q0..q31, FPCR, FPSR: 66 words), loaded lazily.
    pub const FP: u64 = 0x200;
    /// Its CSpace root: a CNode slot (32 bytes) inside the TCB.
    pub const CSPACE_SLOT: u64 = 0x180;
    /// Byte offset of register `x(n)` in the context.
    pub const fn reg(n: u64) -> u64 {
        CTX + 8 * n
    }
}

/// Thread states.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not running (new or suspended).
    Inactive = 0,
    /// Running or in a run queue.
    Ready = 1,
    /// Queued on an endpoint to send.
    BlockedSend = 2,
    /// Queued on an endpoint to receive.
    BlockedRecv = 3,
    /// Waiting for the reply to its Call.
    BlockedReply = 4,
    /// Queued on a notification, waiting for a signal.
    BlockedNotification = 5,
}

impl State {
    fn from(v: u64) -> State {
        match v {
            1 => State::Ready,
            2 => State::BlockedSend,
            3 => State::BlockedRecv,
            4 => State::BlockedReply,
            5 => State::BlockedNotification,
            _ => State::Inactive,
        }
    }
}

/// A thread's state.
pub fn state<M: ObjMem>(m: &M, t: u64) -> State {
    State::from(m.rd(t + tcb::STATE))
}

fn set_state<M: ObjMem>(m: &mut M, t: u64, s: State) {
    m.wr(t + tcb::STATE, s as u64);
}

/// Endpoint words: 0 = queue head with the queue kind in bits 1:0, 1 = tail, 2 = the
/// kernel's fast-path lock (not touched here).
const EP_IDLE: u64 = 0;
const EP_SEND: u64 = 1;
const EP_RECV: u64 = 2;

fn ep_queue<M: ObjMem>(m: &M, ep: u64) -> (u64, u64, u64) {
    let w = m.rd(ep);
    (w & 3, w & !3, m.rd(ep + 8))
}

/// Who waits on endpoint `ep`: `Some((true, t))` for senders, `Some((false, t))` for
/// receivers, `t` being the first; `None` when nobody does.
pub fn waiting<M: ObjMem>(m: &M, ep: u64) -> Option<(bool, u64)> {
    match ep_queue(m, ep) {
        (EP_SEND, head, _) => Some((true, head)),
        (EP_RECV, head, _) => Some((false, head)),
        _ => None,
    }
}

fn ep_set<M: ObjMem>(m: &mut M, ep: u64, kind: u64, head: u64, tail: u64) {
    let kind = if head == 0 { EP_IDLE } else { kind };
    m.wr(ep, head | kind);
    m.wr(ep + 8, tail);
}

fn ep_enqueue<M: ObjMem>(m: &mut M, ep: u64, kind: u64, t: u64) {
    let (_, head, tail) = ep_queue(m, ep);
    m.wr(t + tcb::NEXT, 0);
    m.wr(t + tcb::PREV, tail);
    m.wr(t + tcb::BLOCKED_ON, ep);
    if tail != 0 {
        m.wr(tail + tcb::NEXT, t);
        ep_set(m, ep, kind, head, t);
    } else {
        ep_set(m, ep, kind, t, t);
    }
}

/// Takes `t` off the endpoint queue it is on.
fn ep_remove<M: ObjMem>(m: &mut M, t: u64) {
    let ep = m.rd(t + tcb::BLOCKED_ON);
    let (kind, mut head, mut tail) = ep_queue(m, ep);
    let (next, prev) = (m.rd(t + tcb::NEXT), m.rd(t + tcb::PREV));
    if prev != 0 {
        m.wr(prev + tcb::NEXT, next);
    } else {
        head = next;
    }
    if next != 0 {
        m.wr(next + tcb::PREV, prev);
    } else {
        tail = prev;
    }
    ep_set(m, ep, kind, head, tail);
    m.wr(t + tcb::NEXT, 0);
    m.wr(t + tcb::PREV, 0);
    m.wr(t + tcb::BLOCKED_ON, 0);
}

/// Copies the message (x1..x5, or the fault message of a faulted sender) from `from` to
/// `to` and gives `to` the badge and x0 = 0.
fn transfer<M: ObjMem>(m: &mut M, from: u64, to: u64, badge: u64) {
    transfer_with(m, from, to, badge, true)
}

fn transfer_with<M: ObjMem>(m: &mut M, from: u64, to: u64, badge: u64, caps_ok: bool) {
    let faulted = m.rd(from + tcb::FAULTED) != 0;
    for r in 1..=5 {
        let v = if faulted {
            m.rd(from + tcb::FAULT_MSG + 8 * (r - 1))
        } else {
            m.rd(from + tcb::reg(r))
        };
        m.wr(to + tcb::reg(r), v);
    }
    if !faulted {
        let info = m.rd(to + tcb::reg(1));
        let grant = caps_ok && m.rd(from + tcb::SEND_GRANT) != 0;
        let delivered = m.extend(from, to, info, grant);
        m.wr(to + tcb::reg(1), delivered);
    }
    m.wr(to + tcb::reg(0), 0);
    m.wr(to + tcb::reg(6), badge);
}

/// What the current thread does after an IPC operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// It carries on (its x0 holds the result).
    Continue,
    /// It blocked: the kernel must pick another thread.
    Blocked,
}

/// Send (or Call) on endpoint `ep` with the cap's `badge`. `wake` is told of every
/// thread made ready. Non-blocking sends to an endpoint with no receiver are dropped.
pub fn send<M: ObjMem>(
    m: &mut M,
    cur: u64,
    ep: u64,
    badge: u64,
    call: bool,
    block: bool,
    wake: &mut dyn FnMut(&mut M, u64),
) -> After {
    let (kind, head, _) = ep_queue(m, ep);
    if kind == EP_RECV {
        ep_remove(m, head);
        transfer(m, cur, head, badge);
        set_state(m, head, State::Ready);
        wake(m, head);
        if call {
            m.wr(head + tcb::CALLER, cur);
            m.wr(cur + tcb::REPLY_FROM, head);
            set_state(m, cur, State::BlockedReply);
            return After::Blocked;
        }
        m.wr(cur + tcb::reg(0), 0);
        return After::Continue;
    }
    if !block && !call {
        m.wr(cur + tcb::reg(0), 0);
        return After::Continue;
    }
    m.wr(cur + tcb::SEND_BADGE, badge);
    m.wr(cur + tcb::SEND_IS_CALL, call as u64);
    set_state(m, cur, State::BlockedSend);
    ep_enqueue(m, ep, EP_SEND, cur);
    After::Blocked
}

/// Receive on `ep`. A non-blocking receive with no sender returns at once with an empty
/// message (x1 = 0, badge 0).
pub fn recv<M: ObjMem>(
    m: &mut M,
    cur: u64,
    ep: u64,
    block: bool,
    wake: &mut dyn FnMut(&mut M, u64),
) -> After {
    let (kind, head, _) = ep_queue(m, ep);
    if kind == EP_SEND {
        ep_remove(m, head);
        let badge = m.rd(head + tcb::SEND_BADGE);
        transfer(m, head, cur, badge);
        if m.rd(head + tcb::SEND_IS_CALL) != 0 {
            m.wr(cur + tcb::CALLER, head);
            m.wr(head + tcb::REPLY_FROM, cur);
            set_state(m, head, State::BlockedReply);
        } else {
            m.wr(head + tcb::reg(0), 0);
            set_state(m, head, State::Ready);
            wake(m, head);
        }
        return After::Continue;
    }
    if !block {
        m.wr(cur + tcb::reg(0), 0);
        m.wr(cur + tcb::reg(1), 0);
        m.wr(cur + tcb::reg(6), 0);
        return After::Continue;
    }
    set_state(m, cur, State::BlockedRecv);
    ep_enqueue(m, ep, EP_RECV, cur);
    After::Blocked
}

/// Sends thread `cur`'s fault message `msg` (info, MR0..MR3) to its handler's endpoint
/// `ep` as a Call: the thread waits for the handler's reply, its own registers untouched.
pub fn send_fault<M: ObjMem>(
    m: &mut M,
    cur: u64,
    ep: u64,
    badge: u64,
    msg: [u64; 5],
    wake: &mut dyn FnMut(&mut M, u64),
) -> After {
    for (i, v) in msg.into_iter().enumerate() {
        m.wr(cur + tcb::FAULT_MSG + 8 * i as u64, v);
    }
    m.wr(cur + tcb::FAULTED, 1);
    send(m, cur, ep, badge, true, true, wake)
}

/// Reply label that resumes a faulted thread at MR0 instead of retrying the faulting
/// instruction.
pub const FAULT_REPLY_SET_PC: u64 = 1;
/// Reply label: the faulting access was emulated: the pc steps past it and, if MR0 is a
/// register number below 31, that register receives MR1.
pub const FAULT_REPLY_EMULATED: u64 = 2;
/// Reply label: x0..x3 of the faulted thread receive MR0..MR3.
pub const FAULT_REPLY_RESULTS: u64 = 3;

/// Reply to the thread whose Call this thread received; a reply with no caller waiting is
/// dropped (as in seL4). A reply to a fault message leaves the faulted thread's registers
/// alone: it retries the faulting instruction or, with label [`FAULT_REPLY_SET_PC`],
/// resumes at MR0.
pub fn reply<M: ObjMem>(m: &mut M, cur: u64, wake: &mut dyn FnMut(&mut M, u64)) {
    let caller = m.rd(cur + tcb::CALLER);
    m.wr(cur + tcb::CALLER, 0);
    if caller != 0
        && state(m, caller) == State::BlockedReply
        && m.rd(caller + tcb::REPLY_FROM) == cur
    {
        if m.rd(caller + tcb::FAULTED) != 0 {
            m.wr(caller + tcb::FAULTED, 0);
            let mr = |m: &M, i: u64| m.rd(cur + tcb::reg(2 + i));
            let pc = caller + tcb::CTX + 32 * 8;
            match m.rd(cur + tcb::reg(1)) >> 12 {
                FAULT_REPLY_SET_PC => {
                    let v = mr(m, 0);
                    m.wr(pc, v);
                }
                FAULT_REPLY_EMULATED => {
                    let r = mr(m, 0);
                    if r < 31 {
                        let v = mr(m, 1);
                        m.wr(caller + tcb::reg(r), v);
                    }
                    let next = m.rd(pc).wrapping_add(4);
                    m.wr(pc, next);
                }
                FAULT_REPLY_RESULTS => {
                    for i in 0..4 {
                        let v = mr(m, i);
                        m.wr(caller + tcb::reg(i), v);
                    }
                }
                _ => {}
            }
        } else {
            // Replies carry no capabilities.
            transfer_with(m, cur, caller, 0, false);
        }
        m.wr(caller + tcb::REPLY_FROM, 0);
        set_state(m, caller, State::Ready);
        wake(m, caller);
    }
}

/// Stops `t` wherever it is blocked (it becomes Inactive with `x0 = error`): used for
/// suspend, for TCB destruction and, for each waiter, when an endpoint is destroyed.
/// A thread in a run queue must be taken out of it by the caller first.
pub fn cancel<M: ObjMem>(m: &mut M, t: u64, error: u64) {
    match state(m, t) {
        State::BlockedSend | State::BlockedRecv | State::BlockedNotification => ep_remove(m, t),
        State::BlockedReply => {
            let server = m.rd(t + tcb::REPLY_FROM);
            if server != 0 && m.rd(server + tcb::CALLER) == t {
                m.wr(server + tcb::CALLER, 0);
            }
            m.wr(t + tcb::REPLY_FROM, 0);
        }
        State::Ready | State::Inactive => {}
    }
    // A server that owes this thread nothing any more.
    let caller = m.rd(t + tcb::CALLER);
    if caller != 0 && m.rd(caller + tcb::REPLY_FROM) == t {
        m.wr(caller + tcb::REPLY_FROM, 0);
    }
    m.wr(t + tcb::CALLER, 0);
    m.wr(t + tcb::FAULTED, 0);
    m.wr(t + tcb::reg(0), error);
    set_state(m, t, State::Inactive);
}

/// Notification words: 0 and 1 are the waiters' queue (as an endpoint's), 2 the signal
/// bits, 3 whether it has been signalled since the last wait.
const NTFN_BITS: u64 = 16;
const NTFN_ACTIVE: u64 = 24;

/// Signal notification `n` with `badge`: the first waiter gets the accumulated bits
/// (in x6); with no waiter the bits are kept for the next Wait or Poll.
pub fn signal<M: ObjMem>(m: &mut M, n: u64, badge: u64, wake: &mut dyn FnMut(&mut M, u64)) {
    let (_, head, _) = ep_queue(m, n);
    let bits = m.rd(n + NTFN_BITS) | badge;
    if head != 0 {
        ep_remove(m, head);
        m.wr(n + NTFN_BITS, 0);
        m.wr(n + NTFN_ACTIVE, 0);
        m.wr(head + tcb::reg(0), 0);
        m.wr(head + tcb::reg(6), bits);
        set_state(m, head, State::Ready);
        wake(m, head);
    } else {
        m.wr(n + NTFN_BITS, bits);
        m.wr(n + NTFN_ACTIVE, 1);
    }
}

/// Wait on notification `n` (or Poll, `block = false`): if it was signalled, take the
/// bits (x6) at once; else block (or, polling, return 0 bits).
pub fn wait<M: ObjMem>(m: &mut M, cur: u64, n: u64, block: bool) -> After {
    if m.rd(n + NTFN_ACTIVE) != 0 || !block {
        let bits = m.rd(n + NTFN_BITS);
        m.wr(n + NTFN_BITS, 0);
        m.wr(n + NTFN_ACTIVE, 0);
        m.wr(cur + tcb::reg(0), 0);
        m.wr(cur + tcb::reg(6), bits);
        return After::Continue;
    }
    set_state(m, cur, State::BlockedNotification);
    ep_enqueue(m, n, EP_RECV, cur);
    After::Blocked
}

/// Every thread queued on `ep` (an endpoint or a notification), removed and made ready
/// with `x0 = error` (the object is being destroyed). `wake` is told of each.
pub fn abort_endpoint<M: ObjMem>(
    m: &mut M,
    ep: u64,
    error: u64,
    wake: &mut dyn FnMut(&mut M, u64),
) {
    loop {
        let (_, head, _) = ep_queue(m, ep);
        if head == 0 {
            return;
        }
        ep_remove(m, head);
        m.wr(head + tcb::reg(0), error);
        set_state(m, head, State::Ready);
        wake(m, head);
    }
}

/// The same-core fast path's Call (or fault message, `fault = Some(msg)`): if the first
/// thread waiting on `ep` is a receiver for which `local` holds, the Call is done as
/// [`send`] does it and the result is true; otherwise nothing is touched and the result
/// is false (the caller takes the slow path). A Call whose message carries a capability
/// never qualifies. The kernel calls it under its core's flag and `ep`'s lock
/// (`crate::brlock`); `local` says whether a thread runs on this core.
#[allow(clippy::too_many_arguments)]
pub fn fast_call<M: ObjMem>(
    m: &mut M,
    cur: u64,
    ep: u64,
    badge: u64,
    grant: bool,
    fault: Option<[u64; 5]>,
    local: &dyn Fn(&M, u64) -> bool,
    wake: &mut dyn FnMut(&mut M, u64),
) -> bool {
    if fault.is_none() && msg::caps(m.rd(cur + tcb::reg(1))) != 0 {
        return false;
    }
    match waiting(m, ep) {
        Some((false, receiver)) if local(m, receiver) => {}
        _ => return false,
    }
    match fault {
        Some(msg) => {
            send_fault(m, cur, ep, badge, msg, wake);
        }
        None => {
            m.wr(cur + tcb::SEND_GRANT, grant as u64);
            send(m, cur, ep, badge, true, true, wake);
        }
    }
    true
}

/// The same-core fast path's ReplyRecv on `ep`: done as [`reply`] then [`recv`] (true)
/// if the caller it replies to, if any, is `local` and the endpoint's first sender, if
/// any, carries no capability and is either a Call or `local` (a Send would make it
/// ready); otherwise nothing is touched (false). Locking as for [`fast_call`].
pub fn fast_reply_recv<M: ObjMem>(
    m: &mut M,
    cur: u64,
    ep: u64,
    local: &dyn Fn(&M, u64) -> bool,
    wake: &mut dyn FnMut(&mut M, u64),
) -> bool {
    let caller = m.rd(cur + tcb::CALLER);
    if caller != 0 && !local(m, caller) {
        return false;
    }
    if let Some((true, sender)) = waiting(m, ep) {
        let faulted = m.rd(sender + tcb::FAULTED) != 0;
        let plain = faulted || msg::caps(m.rd(sender + tcb::reg(1))) == 0;
        let call = m.rd(sender + tcb::SEND_IS_CALL) != 0;
        if !plain || !(call || local(m, sender)) {
            return false;
        }
    }
    reply(m, cur, wake);
    recv(m, cur, ep, true, wake);
    true
}

/// Ready threads of one core by priority: FIFO per priority, a bitmap to find the
/// highest non-empty level. Links go through the TCBs' NEXT/PREV; the running thread is
/// not in the queue.
pub struct RunQueue {
    bitmap: [u64; 4],
    head: [u64; 256],
    tail: [u64; 256],
}

impl Default for RunQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl RunQueue {
    /// An empty queue.
    pub const fn new() -> Self {
        RunQueue {
            bitmap: [0; 4],
            head: [0; 256],
            tail: [0; 256],
        }
    }

    /// Appends `t` at its priority.
    pub fn push<M: ObjMem>(&mut self, m: &mut M, t: u64) {
        let p = (m.rd(t + tcb::PRIO) & 0xff) as usize;
        m.wr(t + tcb::NEXT, 0);
        m.wr(t + tcb::PREV, self.tail[p]);
        if self.tail[p] != 0 {
            m.wr(self.tail[p] + tcb::NEXT, t);
        } else {
            self.head[p] = t;
        }
        self.tail[p] = t;
        self.bitmap[p / 64] |= 1 << (p % 64);
    }

    /// Removes `t` if it is queued here (true if it was).
    pub fn remove<M: ObjMem>(&mut self, m: &mut M, t: u64) -> bool {
        let p = (m.rd(t + tcb::PRIO) & 0xff) as usize;
        let (next, prev) = (m.rd(t + tcb::NEXT), m.rd(t + tcb::PREV));
        if prev == 0 && self.head[p] != t {
            return false;
        }
        if prev != 0 {
            m.wr(prev + tcb::NEXT, next);
        } else {
            self.head[p] = next;
        }
        if next != 0 {
            m.wr(next + tcb::PREV, prev);
        } else {
            self.tail[p] = prev;
        }
        if self.head[p] == 0 {
            self.bitmap[p / 64] &= !(1 << (p % 64));
        }
        m.wr(t + tcb::NEXT, 0);
        m.wr(t + tcb::PREV, 0);
        true
    }

    /// Highest priority with a ready thread.
    pub fn top_priority(&self) -> Option<u8> {
        (0..4)
            .rev()
            .find(|&i| self.bitmap[i] != 0)
            .map(|i| (i * 64 + 63 - self.bitmap[i].leading_zeros() as usize) as u8)
    }

    /// Takes the first thread of the highest priority.
    pub fn pop<M: ObjMem>(&mut self, m: &mut M) -> Option<u64> {
        let p = self.top_priority()? as usize;
        let t = self.head[p];
        self.remove(m, t);
        Some(t)
    }
}

#[cfg(test)]
mod tests;

#[cfg(all(test, loom))]
mod loom_fast;
