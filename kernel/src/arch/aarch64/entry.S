// Bulkhead kernel: entry points, exception vectors and the return to lower levels.
//
// Register conventions: TPIDR_EL2 holds the address of this core's PerCpu record, whose
// first word is a pointer to the UserContext of the task running on this core and whose
// second word is the top of this core's kernel stack (see cpu.rs, which pins the layout).
// The kernel never keeps state on its stack across a return to a lower level: every
// exit goes through bh_resume_user, which resets SP to the stack top.

// Per-core stride: a 4 KiB guard page below a 32 KiB stack (see link.x).
.equ STACK_SIZE, 0x9000
// PerCpu field: top of this core's stack for fatal kernel exceptions (cpu.rs).
.equ PERCPU_FATAL_STACK, 16
.equ MAX_CPUS, 8
// UserContext field offsets (cpu.rs asserts them).
.equ CTX_SP, 248
.equ CTX_ELR, 256
.equ CTX_SPSR, 264

.section .text.boot, "ax"
.global _start
_start:
    // The arm64 Image header (Linux Documentation/arm64/booting.rst), so that a
    // bootloader's `booti` (U-Boot) or QEMU's -kernel of the flat image places the kernel
    // at RAM base + text_offset and enters it here with x0 = the DTB; as an ELF the entry
    // is the same branch.
    b       bh_boot                 // code0
    .long   0                       // code1
    .quad   __text_offset           // text_offset
    .quad   __image_size            // image_size: the whole kernel, bss and stacks included
    .quad   0x2                     // flags: little-endian, 4 KiB pages, not relocatable
    .quad   0                       // res2
    .quad   0                       // res3
    .quad   0                       // res4
    .ascii  "ARM\x64"               // magic
    .long   0                       // res5 (no PE header)
bh_boot:
    // Boot core. x0 may hold a DTB address (arm64 Image boot protocol); 0 otherwise.
    mov     x19, x0
    mov     x20, #0
    // Zero .bss before any Rust code runs (no stack is used yet).
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    str     xzr, [x1], #8
    b       1b
2:  b       bh_common_entry

.global bh_secondary_entry
bh_secondary_entry:
    // Secondary core started by PSCI CPU_ON: x0 = context_id = our core index.
    mov     x19, #0
    mov     x20, x0

bh_common_entry:
    msr     daifset, #0xf
    // Refuse indices we have no stack for; park the core.
    cmp     x20, #MAX_CPUS
    b.hs    bh_park
    // Stack: __stacks_end - index * STACK_SIZE.
    adrp    x1, __stacks_end
    add     x1, x1, :lo12:__stacks_end
    mov     x2, #STACK_SIZE
    msub    x1, x2, x20, x1
    // Select SP_ELx at the current level and set it.
    msr     spsel, #1
    mov     sp, x1
    // Entered at EL2? Set up the trap controls the Rust code depends on: no FP/SIMD
    // traps (tasks use FP; the kernel itself is soft-float), nothing else yet.
    mrs     x2, CurrentEL
    lsr     x2, x2, #2
    and     x2, x2, #3
    cmp     x2, #2
    b.ne    3f
    mov     x3, #0x33ff
    msr     cptr_el2, x3
    isb
3:  mov     x0, x19
    mov     x1, x20
    // x2 = CurrentEL
    bl      bh_kernel_entry
bh_park:
    wfe
    b       bh_park

.section .text, "ax"

// ---------------------------------------------------------------------------------
// bh_resume_user(ctx: *const UserContext) -> !
// Loads a lower level's full register state and returns to it.
.global bh_resume_user
bh_resume_user:
    mrs     x1, tpidr_el2
    ldr     x1, [x1, #8]
    mov     sp, x1
    ldr     x1, [x0, #CTX_SP]
    msr     sp_el0, x1
    ldr     x1, [x0, #CTX_ELR]
    msr     elr_el2, x1
    ldr     x1, [x0, #CTX_SPSR]
    msr     spsr_el2, x1
    ldp     x2, x3, [x0, #16]
    ldp     x4, x5, [x0, #32]
    ldp     x6, x7, [x0, #48]
    ldp     x8, x9, [x0, #64]
    ldp     x10, x11, [x0, #80]
    ldp     x12, x13, [x0, #96]
    ldp     x14, x15, [x0, #112]
    ldp     x16, x17, [x0, #128]
    ldp     x18, x19, [x0, #144]
    ldp     x20, x21, [x0, #160]
    ldp     x22, x23, [x0, #176]
    ldp     x24, x25, [x0, #192]
    ldp     x26, x27, [x0, #208]
    ldp     x28, x29, [x0, #224]
    ldr     x30, [x0, #240]
    ldp     x0, x1, [x0, #0]
    eret
    // No speculation past an exception return.
    dsb     nsh
    isb

// bh_fp_save(area) / bh_fp_restore(area): q0..q31, then FPCR, FPSR (66 words). The
// kernel itself is built without FP, so these are the only places that touch the
// registers (CPTR_EL2.TFP is clear when they run).
.arch_extension fp
.arch_extension simd
.global bh_fp_save
bh_fp_save:
    stp     q0, q1, [x0, #0]
    stp     q2, q3, [x0, #32]
    stp     q4, q5, [x0, #64]
    stp     q6, q7, [x0, #96]
    stp     q8, q9, [x0, #128]
    stp     q10, q11, [x0, #160]
    stp     q12, q13, [x0, #192]
    stp     q14, q15, [x0, #224]
    stp     q16, q17, [x0, #256]
    stp     q18, q19, [x0, #288]
    stp     q20, q21, [x0, #320]
    stp     q22, q23, [x0, #352]
    stp     q24, q25, [x0, #384]
    stp     q26, q27, [x0, #416]
    stp     q28, q29, [x0, #448]
    stp     q30, q31, [x0, #480]
    mrs     x1, fpcr
    mrs     x2, fpsr
    add     x3, x0, #512
    stp     x1, x2, [x3]
    ret

.global bh_fp_restore
bh_fp_restore:
    ldp     q0, q1, [x0, #0]
    ldp     q2, q3, [x0, #32]
    ldp     q4, q5, [x0, #64]
    ldp     q6, q7, [x0, #96]
    ldp     q8, q9, [x0, #128]
    ldp     q10, q11, [x0, #160]
    ldp     q12, q13, [x0, #192]
    ldp     q14, q15, [x0, #224]
    ldp     q16, q17, [x0, #256]
    ldp     q18, q19, [x0, #288]
    ldp     q20, q21, [x0, #320]
    ldp     q22, q23, [x0, #352]
    ldp     q24, q25, [x0, #384]
    ldp     q26, q27, [x0, #416]
    ldp     q28, q29, [x0, #448]
    ldp     q30, q31, [x0, #480]
    add     x3, x0, #512
    ldp     x1, x2, [x3]
    msr     fpcr, x1
    msr     fpsr, x2
    ret

// bh_idle(stack_top) -> !: reset the stack and wait for interrupts with IRQs unmasked.
.global bh_idle
bh_idle:
    mov     sp, x0
    msr     daifclr, #2
4:  wfi
    b       4b

// ---------------------------------------------------------------------------------
// Exception vectors.

// Save a lower level's registers into the current UserContext and call `handler`
// (never returns) with x0 = the context.
.macro LOWER_ENTRY handler
    stp     x0, x1, [sp, #-16]!
    mrs     x0, tpidr_el2
    ldr     x0, [x0]
    stp     x2, x3, [x0, #16]
    stp     x4, x5, [x0, #32]
    stp     x6, x7, [x0, #48]
    stp     x8, x9, [x0, #64]
    stp     x10, x11, [x0, #80]
    stp     x12, x13, [x0, #96]
    stp     x14, x15, [x0, #112]
    stp     x16, x17, [x0, #128]
    stp     x18, x19, [x0, #144]
    stp     x20, x21, [x0, #160]
    stp     x22, x23, [x0, #176]
    stp     x24, x25, [x0, #192]
    stp     x26, x27, [x0, #208]
    stp     x28, x29, [x0, #224]
    str     x30, [x0, #240]
    ldp     x2, x3, [sp], #16
    stp     x2, x3, [x0, #0]
    mrs     x1, sp_el0
    str     x1, [x0, #CTX_SP]
    mrs     x1, elr_el2
    str     x1, [x0, #CTX_ELR]
    mrs     x1, spsr_el2
    str     x1, [x0, #CTX_SPSR]
    bl      \handler
    b       bh_park
.endm

// Save the kernel's caller-saved registers, call `handler(frame)`, restore, return.
// The frame: x0..x18, x29, x30, ELR, SPSR (23 words, padded to 192 bytes).
.macro KERNEL_ENTRY handler
    sub     sp, sp, #192
    stp     x0, x1, [sp, #0]
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x29, [sp, #144]
    mrs     x0, elr_el2
    mrs     x1, spsr_el2
    stp     x30, x0, [sp, #160]
    str     x1, [sp, #176]
    mov     x0, sp
    bl      \handler
    ldr     x1, [sp, #176]
    ldp     x30, x0, [sp, #160]
    msr     elr_el2, x0
    msr     spsr_el2, x1
    ldp     x0, x1, [sp, #0]
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x29, [sp, #144]
    add     sp, sp, #192
    eret
    dsb     nsh
    isb
.endm

.macro UNEXPECTED kind
    sub     sp, sp, #176
    stp     x0, x1, [sp, #0]
    stp     x2, x3, [sp, #16]
    stp     x29, x30, [sp, #32]
    mov     x0, #\kind
    add     x1, sp, #0
    bl      bh_unexpected
    b       bh_park
.endm

.section .text.vectors, "ax"
.balign 2048
.global bh_vectors
bh_vectors:
// Current EL with SP_EL0.
.balign 128
    UNEXPECTED 0
.balign 128
    UNEXPECTED 1
.balign 128
    UNEXPECTED 2
.balign 128
    UNEXPECTED 3
// Current EL with SP_ELx.
.balign 128
    b       bh_kernel_sync_entry
.balign 128
    b       bh_kernel_irq_entry
.balign 128
    UNEXPECTED 6
.balign 128
    UNEXPECTED 7
// Lower EL, AArch64.
.balign 128
    b       bh_lower_sync_entry
.balign 128
    b       bh_lower_irq_entry
.balign 128
    b       bh_lower_fiq_entry
.balign 128
    b       bh_lower_serror_entry
// Lower EL, AArch32 (never enabled: HCR_EL2.RW = 1).
.balign 128
    UNEXPECTED 12
.balign 128
    UNEXPECTED 13
.balign 128
    UNEXPECTED 14
.balign 128
    UNEXPECTED 15

bh_kernel_sync_entry:
    // A synchronous exception in the kernel is always fatal, and may be a stack overflow
    // into the guard page: report it from a separate stack. SP_EL0 is free as scratch
    // here (a thread's SP_EL0 was saved when it entered the kernel; the kernel never
    // returns from this exception).
    msr     sp_el0, x0
    mrs     x0, tpidr_el2
    cbz     x0, 5f
    ldr     x0, [x0, #PERCPU_FATAL_STACK]
    cbz     x0, 5f
    mov     sp, x0
5:  mrs     x0, sp_el0
    KERNEL_ENTRY bh_kernel_sync
bh_kernel_irq_entry:
    KERNEL_ENTRY bh_kernel_irq
bh_lower_sync_entry:
    LOWER_ENTRY bh_lower_sync
bh_lower_irq_entry:
    LOWER_ENTRY bh_lower_irq
bh_lower_fiq_entry:
    LOWER_ENTRY bh_lower_fiq
bh_lower_serror_entry:
    LOWER_ENTRY bh_lower_serror
