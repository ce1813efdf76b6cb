//! Differential test: the kernel's own capability code (`kcore::cap`, compiled for the
//! host) and the model run the same random operation sequences; every result and the
//! final capability state (every slot's cap and its parent) must agree. A disagreement
//! is shrunk by proptest to a minimal sequence and printed with its seed.
//!
//! The sequences include the object invocations of stage-2 objects, VCPUs and IRQs.
//! Those whose code lives in the kernel binary (all but IrqControlGet) run on the model
//! only; the test then checks that they leave the capability state as the kernel's is,
//! that is, that they change no cap. IRQ caps and claimed IRQs are compared too.

mod kernel_harness;

use cap_model::gen::{ops_for, Layout};
use cap_model::Op;
use kernel_harness::Kernel;
use proptest::prelude::*;
use std::collections::BTreeSet;

fn run(layout: Layout, ops: &[Op]) -> Result<(), TestCaseError> {
    let cfg = layout.config();
    let mut model = layout.boot();
    let mut kernel = Kernel::boot_with_irq_control(&cfg, layout.vm_slots().irq_control);
    prop_assert_eq!(kernel.snapshot(), model.snapshot(), "boot states differ");
    prop_assert_eq!(kernel.irq_caps(), model.irq_caps(), "boot IRQ caps differ");
    for (i, op) in ops.iter().enumerate() {
        let want = model.apply(op);
        if let Some(got) = kernel.apply(op) {
            prop_assert_eq!(got, want, "operation {} ({:?}) returned differently", i, op);
        }
        prop_assert_eq!(
            kernel.snapshot(),
            model.snapshot(),
            "states differ after operation {} ({:?})",
            i,
            op
        );
        prop_assert_eq!(
            kernel.irq_caps(),
            model.irq_caps(),
            "IRQ caps differ after operation {} ({:?})",
            i,
            op
        );
        let claimed: BTreeSet<u32> = model.vm().irqs.keys().copied().collect();
        prop_assert_eq!(
            kernel.claimed_irqs(),
            claimed,
            "claimed IRQs differ after operation {} ({:?})",
            i,
            op
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Single-level addressing (the layout of a task's root CNode).
    #[test]
    fn kernel_matches_model(ops in ops_for(Layout::Standard, 50..80)) {
        run(Layout::Standard, &ops)?;
    }

    /// Nested CNodes: addresses that walk through a CNode cap into a child CNode.
    #[test]
    fn kernel_matches_model_nested(ops in ops_for(Layout::Nested, 50..80)) {
        run(Layout::Nested, &ops)?;
    }
}
