//! Link the guest at its VM's RAM base with an arm64 `Image` header first (guest.x).
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
        println!("cargo:rustc-link-arg-bins=-T{dir}/guest.x");
        println!("cargo:rerun-if-changed=guest.x");
    }
}
