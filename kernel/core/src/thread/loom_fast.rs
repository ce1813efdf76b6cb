//! Loom models of the same-core IPC fast path running the real queue code: object memory
//! is loom atomics accessed Relaxed (so only the locks order it), each core's fast path
//! takes its flag of the kernel lock and the endpoint's lock (`crate::brlock`), and a slow
//! path takes the whole lock. After every interleaving the endpoint queue must be well
//! formed and every message delivered exactly once.

use super::*;
use crate::brlock::{ep_lock, ep_unlock, BrLock};
use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;

/// TCBs at 0x200-byte strides from 0x200 (only the fields IPC uses), then the endpoint (3 words:
/// queue head, tail, fast-path lock).
const STRIDE: u64 = 0x200;
const THREADS: u64 = 5;
const EP: u64 = (THREADS + 1) * STRIDE;
const WORDS: usize = (EP / 8) as usize + 3;

/// Thread `i`'s TCB (address 0 means "none" in the queues).
fn t(i: u64) -> u64 {
    (i + 1) * STRIDE
}

struct World {
    lock: BrLock<2>,
    mem: Vec<AtomicU64>,
}

/// Object memory over the world's atomics.
struct View<'a>(&'a World);

impl ObjMem for View<'_> {
    fn rd(&self, a: u64) -> u64 {
        self.0.mem[(a / 8) as usize].load(Ordering::Relaxed)
    }
    fn wr(&mut self, a: u64, v: u64) {
        self.0.mem[(a / 8) as usize].store(v, Ordering::Relaxed)
    }
}

fn world() -> Arc<World> {
    Arc::new(World {
        lock: BrLock::new(),
        mem: (0..WORDS).map(|_| AtomicU64::new(0)).collect(),
    })
}

/// Sets up thread `i` on core `core` with message value `v` in MR0 (length 1).
fn thread_on(m: &mut View<'_>, i: u64, core: u64, v: u64) {
    m.wr(t(i) + tcb::CORE, core);
    m.wr(t(i) + tcb::reg(1), 1);
    m.wr(t(i) + tcb::reg(2), v);
}

fn local(core: u64) -> impl Fn(&View<'_>, u64) -> bool {
    move |m, th| m.rd(th + tcb::CORE) == core
}

fn ep_word(w: &World) -> &AtomicU64 {
    &w.mem[(EP / 8) as usize + 2]
}

/// A fast-path Call by thread `i` of core `core`; true if it was taken.
fn fast_call_on(w: &World, core: usize, i: u64) -> bool {
    w.lock.read(core, &mut |_| {});
    ep_lock(ep_word(w));
    let mut m = View(w);
    let done = fast_call(
        &mut m,
        t(i),
        EP,
        0x10 + i,
        false,
        None,
        &local(core as u64),
        &mut |_, _| {},
    );
    ep_unlock(ep_word(w));
    w.lock.release(core);
    done
}

/// The endpoint queue from head to tail, checking the links both ways and that every
/// member is blocked on it in the queue's state.
fn queue(m: &View<'_>) -> Vec<u64> {
    let (kind, head, tail) = ep_queue(m, EP);
    let mut out = Vec::new();
    let (mut prev, mut cur) = (0, head);
    while cur != 0 {
        assert_eq!(m.rd(cur + tcb::PREV), prev, "back link of {cur:#x}");
        assert_eq!(
            m.rd(cur + tcb::BLOCKED_ON),
            EP,
            "{cur:#x} blocked elsewhere"
        );
        let want = if kind == EP_RECV {
            State::BlockedRecv
        } else {
            State::BlockedSend
        };
        assert_eq!(state(m, cur), want, "state of queued {cur:#x}");
        out.push(cur);
        assert!(out.len() <= THREADS as usize, "the queue loops");
        prev = cur;
        cur = m.rd(cur + tcb::NEXT);
    }
    assert_eq!(tail, prev, "tail");
    out
}

/// Servers s0 (core 0) and s1 (core 1) wait on the endpoint in that order; clients c0
/// (core 0) and c1 (core 1) Call it at once on the fast path. c0's Call always
/// qualifies (s0 is first and local); c1's only once c0 has taken s0. Whatever the
/// order, each server has at most one caller, no message is lost or duplicated, and
/// the queue holds exactly the servers not called.
#[test]
fn loom_fast_calls_from_two_cores_on_one_endpoint() {
    loom::model(|| {
        let w = world();
        let (s0, s1, c0, c1) = (0, 1, 2, 3);
        {
            let mut m = View(&w);
            thread_on(&mut m, s0, 0, 0);
            thread_on(&mut m, s1, 1, 0);
            thread_on(&mut m, c0, 0, 100);
            thread_on(&mut m, c1, 1, 101);
            for s in [s0, s1] {
                assert_eq!(recv(&mut m, t(s), EP, true, &mut |_, _| {}), After::Blocked);
            }
        }
        let other = {
            let w = w.clone();
            thread::spawn(move || fast_call_on(&w, 1, c1))
        };
        assert!(
            fast_call_on(&w, 0, c0),
            "c0 meets its local server first in line"
        );
        let c1_done = other.join().unwrap();
        w.lock.write(2, &mut |_| {});
        let m = View(&w);
        assert_eq!(m.rd(t(s0) + tcb::CALLER), t(c0));
        assert_eq!(m.rd(t(s0) + tcb::reg(2)), 100, "s0 got c0's message");
        assert_eq!(state(&m, t(c0)), State::BlockedReply);
        if c1_done {
            assert_eq!(m.rd(t(s1) + tcb::CALLER), t(c1));
            assert_eq!(m.rd(t(s1) + tcb::reg(2)), 101, "s1 got c1's message");
            assert_eq!(queue(&m), Vec::<u64>::new());
        } else {
            assert_eq!(state(&m, t(c1)), State::Inactive, "c1 untouched");
            assert_eq!(queue(&m), vec![t(s1)]);
        }
        w.lock.write_release(2);
    });
}

/// On core 0 client c0 Calls server s0 (waiting on the endpoint) on the fast path while
/// on core 1 server s1 answers its caller c1 with a fast ReplyRecv and so joins the
/// queue, and the slow path (the whole lock) sends a non-blocking message from thread 4.
/// Every order leaves a well-formed queue, c1 with its reply, s0 with c0's call, and
/// the slow-path message delivered to a waiting server or dropped, never both.
#[test]
fn loom_fast_call_and_fast_reply_recv_race_a_slow_send() {
    loom::model(|| {
        let w = world();
        let (s0, s1, c0, c1, slow) = (0, 1, 2, 3, 4);
        {
            let mut m = View(&w);
            thread_on(&mut m, s0, 0, 0);
            thread_on(&mut m, s1, 1, 77);
            thread_on(&mut m, c0, 0, 100);
            thread_on(&mut m, c1, 1, 0);
            thread_on(&mut m, slow, 0, 55);
            assert_eq!(
                recv(&mut m, t(s0), EP, true, &mut |_, _| {}),
                After::Blocked
            );
            // c1 waits for s1's reply.
            m.wr(t(s1) + tcb::CALLER, t(c1));
            m.wr(t(c1) + tcb::REPLY_FROM, t(s1));
            m.wr(t(c1) + tcb::STATE, State::BlockedReply as u64);
        }
        let core1 = {
            let w = w.clone();
            thread::spawn(move || {
                w.lock.read(1, &mut |_| {});
                ep_lock(ep_word(&w));
                let mut m = View(&w);
                let done = fast_reply_recv(&mut m, t(s1), EP, &local(1), &mut |_, _| {});
                ep_unlock(ep_word(&w));
                w.lock.release(1);
                done
            })
        };
        let slow_path = {
            let w = w.clone();
            thread::spawn(move || {
                w.lock.write(2, &mut |_| {});
                let mut m = View(&w);
                send(&mut m, t(slow), EP, 9, false, false, &mut |_, _| {});
                w.lock.write_release(2);
            })
        };
        let c0_done = fast_call_on(&w, 0, c0);
        assert!(
            core1.join().unwrap(),
            "s1's caller is local and no sender waits"
        );
        slow_path.join().unwrap();
        w.lock.write(2, &mut |_| {});
        let m = View(&w);
        assert_eq!(state(&m, t(c1)), State::Ready, "c1 got its reply");
        assert_eq!(m.rd(t(c1) + tcb::reg(2)), 77);
        assert_eq!(m.rd(t(s1) + tcb::CALLER), 0);
        // Who got what: s0 either c0's call or the slow message (then c0 either called s1
        // or fell back); s1 is queued unless someone's message reached it.
        let got = |s: u64| (state(&m, t(s)), m.rd(t(s) + tcb::reg(2)));
        let q = queue(&m);
        let mut delivered = 0;
        for s in [s0, s1] {
            match got(s) {
                (State::Ready, 55) => delivered += 1,
                (State::Ready, 100) => assert!(c0_done && m.rd(t(s) + tcb::CALLER) == t(c0)),
                (State::BlockedRecv, _) => assert!(q.contains(&t(s))),
                other => panic!("server {s}: {other:?}"),
            }
        }
        assert!(delivered <= 1, "the slow message arrived twice");
        if c0_done {
            assert_eq!(state(&m, t(c0)), State::BlockedReply);
        } else {
            assert_eq!(state(&m, t(c0)), State::Inactive, "c0 untouched");
        }
        w.lock.write_release(2);
    });
}
