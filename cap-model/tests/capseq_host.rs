//! The sequences of the on-target differential test (`capseq`), run on the host against
//! both the model and the kernel's capability code, with the target's CSpace layout: the
//! host half of that test must agree with itself before the target is asked.

mod kernel_harness;

use cap_model::seq::from_capseq;
use cap_model::{BootConfig, Model};
use capseq::{op, Rng, ROOT_GUARD_BITS, ROOT_RADIX, UNTYPED_BITS};
use kernel_harness::Kernel;

#[test]
fn capseq_sequences_agree_on_the_host() {
    let cfg = BootConfig {
        root_addr: 0x4100_0000,
        root_radix: ROOT_RADIX,
        root_guard_bits: ROOT_GUARD_BITS,
        untypeds: vec![(0x6000_0000, UNTYPED_BITS, false)],
    };
    for seed in 0..500 {
        let mut model = Model::boot(&cfg);
        let mut kernel = Kernel::boot(&cfg);
        let mut rng = Rng::new(seed);
        for i in 0..50 {
            let o = from_capseq(op(&mut rng));
            assert_eq!(
                kernel
                    .apply(&o)
                    .expect("capseq has capability operations only"),
                model.apply(&o),
                "seed {seed}, operation {i}: {o:?}"
            );
        }
        assert_eq!(
            kernel.snapshot(),
            model.snapshot(),
            "seed {seed}: final states differ"
        );
    }
}
