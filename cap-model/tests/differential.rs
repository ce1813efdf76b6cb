//! Differential test: the kernel's own capability code (`kcore::cap`, compiled for the
//! host) and the model run the same random operation sequences; every result and the
//! final capability state (every slot's cap and its parent) must agree. A disagreement
//! is shrunk by proptest to a minimal sequence and printed with its seed.

mod kernel_harness;

use cap_model::gen::{ops_for, Layout};
use cap_model::{Model, Op};
use kernel_harness::Kernel;
use proptest::prelude::*;

fn run(layout: Layout, ops: &[Op]) -> Result<(), TestCaseError> {
    let cfg = layout.config();
    let mut model = Model::boot(&cfg);
    let mut kernel = Kernel::boot(&cfg);
    prop_assert_eq!(kernel.snapshot(), model.snapshot(), "boot states differ");
    for (i, op) in ops.iter().enumerate() {
        let want = model.apply(op);
        let got = kernel.apply(op);
        prop_assert_eq!(got, want, "operation {} ({:?}) returned differently", i, op);
        prop_assert_eq!(
            kernel.snapshot(),
            model.snapshot(),
            "states differ after operation {} ({:?})",
            i,
            op
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

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
