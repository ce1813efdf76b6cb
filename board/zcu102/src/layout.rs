// The kernel's load address on this board, shared by the crate and its build script
// (which writes it into the linker script fragment `board.x`).
/// Physical address the kernel image is linked at: 2 MiB into DDR low, clear of address 0
/// (which the kernel never hands out) and of what firmware keeps at the bottom of DDR.
pub const LOAD_ADDR: u64 = 0x0020_0000;
