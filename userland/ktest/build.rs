//! Link as a Bulkhead native task (layout from bulkhead-rt's task.x) with defmt's sections.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-Ttask.x");
        println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
    }
}
