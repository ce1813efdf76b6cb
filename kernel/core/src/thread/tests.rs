//! Host tests of IPC and run queues.

use super::*;
use proptest::prelude::*;
use std::collections::{HashMap, VecDeque};

#[derive(Default)]
struct Mem(HashMap<u64, u64>);
impl ObjMem for Mem {
    fn rd(&self, a: u64) -> u64 {
        self.0.get(&a).copied().unwrap_or(0)
    }
    fn wr(&mut self, a: u64, v: u64) {
        self.0.insert(a, v);
    }
}

const T: [u64; 4] = [0x1_0000, 0x1_0800, 0x1_1000, 0x1_1800];
const EP: u64 = 0x2_0000;
const EP2: u64 = 0x2_0010;

fn msg(m: &mut Mem, t: u64, label: u64, v: u64) {
    m.wr(t + tcb::reg(1), label << 12 | 1);
    m.wr(t + tcb::reg(2), v);
}

fn woken() -> (Vec<u64>, impl FnMut(&mut Mem, u64)) {
    (Vec::new(), |_: &mut Mem, _t: u64| {})
}

#[test]
fn send_then_recv() {
    let mut m = Mem::default();
    let (_, mut w) = woken();
    msg(&mut m, T[0], 7, 42);
    assert_eq!(
        send(&mut m, T[0], EP, 5, false, true, &mut w),
        After::Blocked
    );
    assert_eq!(state(&m, T[0]), State::BlockedSend);
    assert_eq!(recv(&mut m, T[1], EP, true, &mut w), After::Continue);
    assert_eq!(state(&m, T[0]), State::Ready);
    assert_eq!(m.rd(T[1] + tcb::reg(1)), 7 << 12 | 1);
    assert_eq!(m.rd(T[1] + tcb::reg(2)), 42);
    assert_eq!(m.rd(T[1] + tcb::reg(6)), 5, "badge delivered");
    assert_eq!(m.rd(EP), 0, "endpoint idle again");
}

#[test]
fn call_and_reply() {
    let mut m = Mem::default();
    let mut ready = Vec::new();
    let mut w = |_: &mut Mem, t: u64| ready.push(t);
    assert_eq!(recv(&mut m, T[1], EP, true, &mut w), After::Blocked);
    msg(&mut m, T[0], 1, 10);
    assert_eq!(
        send(&mut m, T[0], EP, 0, true, true, &mut w),
        After::Blocked
    );
    assert_eq!(state(&m, T[0]), State::BlockedReply);
    assert_eq!(m.rd(T[1] + tcb::CALLER), T[0]);
    msg(&mut m, T[1], 2, 20);
    reply(&mut m, T[1], &mut w);
    // A second reply finds no caller and is dropped.
    reply(&mut m, T[1], &mut w);
    assert_eq!(state(&m, T[0]), State::Ready);
    assert_eq!(m.rd(T[0] + tcb::reg(2)), 20);
    assert_eq!(ready, vec![T[1], T[0]]);
}

#[test]
fn non_blocking_variants() {
    let mut m = Mem::default();
    let (_, mut w) = woken();
    m.wr(T[0] + tcb::reg(1), 99);
    assert_eq!(recv(&mut m, T[0], EP, false, &mut w), After::Continue);
    assert_eq!(m.rd(T[0] + tcb::reg(1)), 0);
    assert_eq!(
        send(&mut m, T[1], EP, 0, false, false, &mut w),
        After::Continue
    );
    assert_eq!(m.rd(EP), 0, "dropped, not queued");
}

#[test]
fn cancel_and_abort() {
    let mut m = Mem::default();
    let (_, mut w) = woken();
    send(&mut m, T[0], EP, 1, false, true, &mut w);
    send(&mut m, T[1], EP, 2, false, true, &mut w);
    send(&mut m, T[2], EP, 3, false, true, &mut w);
    cancel(&mut m, T[1], 14);
    assert_eq!(state(&m, T[1]), State::Inactive);
    recv(&mut m, T[3], EP, true, &mut w);
    assert_eq!(m.rd(T[3] + tcb::reg(6)), 1);
    abort_endpoint(&mut m, EP, 14, &mut w);
    assert_eq!(state(&m, T[2]), State::Ready);
    assert_eq!(m.rd(T[2] + tcb::reg(0)), 14);
    assert_eq!(m.rd(EP), 0);
    // A caller cancelled while waiting for its reply: the server forgets it.
    recv(&mut m, T[1], EP2, true, &mut w);
    send(&mut m, T[0], EP2, 0, true, true, &mut w);
    cancel(&mut m, T[0], 14);
    assert_eq!(m.rd(T[1] + tcb::CALLER), 0);
}

#[test]
fn faults_go_to_the_handler_and_resume() {
    let mut m = Mem::default();
    let (_, mut w) = woken();
    // The faulting thread's registers must survive the fault round trip.
    m.wr(T[0] + tcb::reg(1), 0xaaaa);
    m.wr(T[0] + tcb::CTX + 32 * 8, 0x1000);
    recv(&mut m, T[1], EP, true, &mut w);
    assert_eq!(
        send_fault(&mut m, T[0], EP, 9, [1 << 12, 0x1000, 0xdead, 3, 4], &mut w),
        After::Blocked
    );
    assert_eq!(m.rd(T[1] + tcb::reg(1)), 1 << 12);
    assert_eq!(m.rd(T[1] + tcb::reg(3)), 0xdead);
    assert_eq!(m.rd(T[1] + tcb::reg(6)), 9);
    assert_eq!(
        m.rd(T[0] + tcb::reg(1)),
        0xaaaa,
        "faulter's registers untouched"
    );
    // Reply with "set pc".
    m.wr(T[1] + tcb::reg(1), FAULT_REPLY_SET_PC << 12);
    m.wr(T[1] + tcb::reg(2), 0x2000);
    reply(&mut m, T[1], &mut w);
    assert_eq!(state(&m, T[0]), State::Ready);
    assert_eq!(m.rd(T[0] + tcb::CTX + 32 * 8), 0x2000);
    assert_eq!(m.rd(T[0] + tcb::reg(1)), 0xaaaa);
    assert_eq!(m.rd(T[0] + tcb::FAULTED), 0);
    // Queued fault (no handler waiting yet) is delivered from the stored message.
    send_fault(&mut m, T[2], EP, 0, [2 << 12, 5, 6, 7, 8], &mut w);
    recv(&mut m, T[1], EP, true, &mut w);
    assert_eq!(m.rd(T[1] + tcb::reg(2)), 5);
    assert_eq!(state(&m, T[2]), State::BlockedReply);
}

#[test]
fn notifications() {
    let mut m = Mem::default();
    let mut ready = Vec::new();
    let mut w = |_: &mut Mem, t: u64| ready.push(t);
    const N: u64 = 0x3_0000;
    signal(&mut m, N, 0b01, &mut w);
    signal(&mut m, N, 0b10, &mut w);
    assert_eq!(wait(&mut m, T[0], N, true), After::Continue);
    assert_eq!(m.rd(T[0] + tcb::reg(6)), 0b11, "bits accumulate");
    assert_eq!(wait(&mut m, T[0], N, false), After::Continue);
    assert_eq!(m.rd(T[0] + tcb::reg(6)), 0, "poll finds nothing");
    assert_eq!(wait(&mut m, T[0], N, true), After::Blocked);
    assert_eq!(wait(&mut m, T[1], N, true), After::Blocked);
    signal(&mut m, N, 4, &mut w);
    assert_eq!(state(&m, T[0]), State::Ready);
    assert_eq!(m.rd(T[0] + tcb::reg(6)), 4);
    assert_eq!(state(&m, T[1]), State::BlockedNotification);
    signal(&mut m, N, 0, &mut w);
    assert_eq!(state(&m, T[1]), State::Ready, "a zero badge still wakes");
    assert_eq!(ready, vec![T[0], T[1]]);
    wait(&mut m, T[2], N, true);
    cancel(&mut m, T[2], 14);
    assert_eq!(m.rd(N), 0, "cancelled waiter left the queue");
}

#[test]
fn run_queue_priorities_and_fifo() {
    let mut m = Mem::default();
    let mut q = RunQueue::new();
    for (t, p) in [(T[0], 10), (T[1], 200), (T[2], 10), (T[3], 0)] {
        m.wr(t + tcb::PRIO, p);
        q.push(&mut m, t);
    }
    assert_eq!(q.top_priority(), Some(200));
    assert_eq!(q.pop(&mut m), Some(T[1]));
    assert!(q.remove(&mut m, T[2]));
    assert!(!q.remove(&mut m, T[2]));
    assert_eq!(q.pop(&mut m), Some(T[0]));
    assert_eq!(q.pop(&mut m), Some(T[3]));
    assert_eq!(q.pop(&mut m), None);
}

#[derive(Debug, Clone)]
enum Step {
    Send(usize, bool, bool),
    Recv(usize, bool),
    Reply(usize),
    Cancel(usize),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let s = prop_oneof![
        (0..4usize, any::<bool>(), any::<bool>()).prop_map(|(t, c, b)| Step::Send(t, c, b)),
        (0..4usize, any::<bool>()).prop_map(|(t, b)| Step::Recv(t, b)),
        (0..4usize).prop_map(Step::Reply),
        (0..4usize).prop_map(Step::Cancel),
    ];
    proptest::collection::vec(s, 1..60)
}

proptest! {
    /// Against a reference: FIFO queues of (thread, value) per direction; every message
    /// sent is received exactly once, in order, with its badge; queue links stay sound.
    #[test]
    fn matches_a_queue_reference(ops in steps()) {
        let mut m = Mem::default();
        let mut senders: VecDeque<(usize, u64, bool)> = VecDeque::new();
        let mut receivers: VecDeque<usize> = VecDeque::new();
        let mut next_val = 1u64;
        let mut caller_of: [Option<usize>; 4] = [None; 4];
        let mut st = [State::Inactive; 4];
        for op in ops {
            let mut w = |_: &mut Mem, _: u64| {};
            match op {
                Step::Send(t, call, block) if matches!(st[t], State::Inactive | State::Ready) => {
                    let v = next_val;
                    next_val += 1;
                    msg(&mut m, T[t], 0, v);
                    let r = send(&mut m, T[t], EP, t as u64 + 100, call, block, &mut w);
                    if let Some(rx) = receivers.pop_front() {
                        prop_assert_eq!(m.rd(T[rx] + tcb::reg(2)), v);
                        prop_assert_eq!(m.rd(T[rx] + tcb::reg(6)), t as u64 + 100);
                        st[rx] = State::Ready;
                        if call { caller_of[rx] = Some(t); st[t] = State::BlockedReply; }
                        prop_assert_eq!(r, if call { After::Blocked } else { After::Continue });
                    } else if block || call {
                        senders.push_back((t, v, call));
                        st[t] = State::BlockedSend;
                        prop_assert_eq!(r, After::Blocked);
                    } else {
                        prop_assert_eq!(r, After::Continue);
                    }
                }
                Step::Recv(t, block) if matches!(st[t], State::Inactive | State::Ready) => {
                    let r = recv(&mut m, T[t], EP, block, &mut w);
                    if let Some((s, v, call)) = senders.pop_front() {
                        prop_assert_eq!(m.rd(T[t] + tcb::reg(2)), v);
                        prop_assert_eq!(r, After::Continue);
                        if call { caller_of[t] = Some(s); st[s] = State::BlockedReply; } else { st[s] = State::Ready; }
                    } else if block {
                        receivers.push_back(t);
                        st[t] = State::BlockedRecv;
                    }
                }
                Step::Reply(t) if matches!(st[t], State::Inactive | State::Ready) => {
                    reply(&mut m, T[t], &mut w);
                    if let Some(c) = caller_of[t].take() {
                        if st[c] == State::BlockedReply { st[c] = State::Ready; }
                    }
                }
                Step::Cancel(t) => {
                    cancel(&mut m, T[t], 14);
                    senders.retain(|s| s.0 != t);
                    receivers.retain(|&r| r != t);
                    for c in caller_of.iter_mut() { if *c == Some(t) { *c = None; } }
                    caller_of[t] = None;
                    st[t] = State::Inactive;
                }
                _ => {}
            }
            for i in 0..4 {
                prop_assert_eq!(state(&m, T[i]), st[i], "thread {}", i);
            }
            // The endpoint's queue is the reference queue, linked both ways.
            let want: Vec<u64> = if !senders.is_empty() { senders.iter().map(|s| T[s.0]).collect() } else { receivers.iter().map(|&r| T[r]).collect() };
            let mut got = Vec::new();
            let mut cur = m.rd(EP) & !3;
            let mut prev = 0;
            while cur != 0 {
                prop_assert_eq!(m.rd(cur + tcb::PREV), prev);
                got.push(cur);
                prev = cur;
                cur = m.rd(cur + tcb::NEXT);
            }
            prop_assert_eq!(m.rd(EP + 8), prev);
            prop_assert_eq!(got, want);
        }
    }
}

#[test]
fn long_messages_are_trimmed_without_buffers_and_replies_carry_no_caps() {
    let mut m = Mem::default();
    let (_, mut w) = woken();
    // Length 20 and one cap, but the default memory has no IPC buffers: 4 registers, no cap.
    m.wr(T[0] + tcb::reg(1), 3 << 12 | 1 << 7 | 20);
    m.wr(T[0] + tcb::SEND_GRANT, 1);
    recv(&mut m, T[1], EP, true, &mut w);
    send(&mut m, T[0], EP, 0, false, true, &mut w);
    assert_eq!(m.rd(T[1] + tcb::reg(1)), 3 << 12 | 4);
    assert_eq!(msg::length(3 << 12 | 1 << 7 | 20), 20);
    assert_eq!(msg::caps(3 << 12 | 1 << 7 | 20), 1);
}
