// The kernel's load address on this board, shared by the crate and its build script
// (which writes it into the linker script fragment `board.x`).
/// Physical address the kernel image is linked at. Above the first MiB of RAM, where QEMU
/// places the DTB for an ELF loaded with `-kernel`.
pub const LOAD_ADDR: u64 = 0x4020_0000;
