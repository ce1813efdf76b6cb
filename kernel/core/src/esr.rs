//! Decoding of ESR_ELx, the Exception Syndrome Register (Arm ARM D17.2.37, "ESR_EL2").
//!
//! `EC` (bits 31:26) says what kind of exception it was; `IL` (bit 25) the instruction
//! length; `ISS` (bits 24:0) the class-specific syndrome. For aborts the fault status code
//! (`DFSC`/`IFSC`, bits 5:0) says which kind of fault and at which translation level.

/// The decoded parts of an ESR value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Esr(pub u64);

/// Exception classes the kernel names (Arm ARM table D17-?; values are the EC field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ExceptionClass {
    /// 0x00
    Unknown,
    /// 0x01
    WfiWfe,
    /// 0x07
    FpSimdAccess,
    /// 0x0e
    IllegalExecutionState,
    /// 0x15
    Svc64,
    /// 0x16
    Hvc64,
    /// 0x17
    Smc64,
    /// 0x18
    SysRegTrap,
    /// 0x20
    InstrAbortLowerEl,
    /// 0x21
    InstrAbortSameEl,
    /// 0x22
    PcAlignment,
    /// 0x24
    DataAbortLowerEl,
    /// 0x25
    DataAbortSameEl,
    /// 0x26
    SpAlignment,
    /// 0x2c
    FpException,
    /// 0x2f
    SError,
    /// 0x30 / 0x31
    Breakpoint,
    /// 0x32 / 0x33
    SoftwareStep,
    /// 0x34 / 0x35
    Watchpoint,
    /// 0x3c
    Brk,
    /// Anything else (the raw EC).
    Other(u8),
}

impl ExceptionClass {
    /// Decodes an EC field value.
    pub const fn from_ec(ec: u8) -> Self {
        use ExceptionClass::*;
        match ec {
            0x00 => Unknown,
            0x01 => WfiWfe,
            0x07 => FpSimdAccess,
            0x0e => IllegalExecutionState,
            0x15 => Svc64,
            0x16 => Hvc64,
            0x17 => Smc64,
            0x18 => SysRegTrap,
            0x20 => InstrAbortLowerEl,
            0x21 => InstrAbortSameEl,
            0x22 => PcAlignment,
            0x24 => DataAbortLowerEl,
            0x25 => DataAbortSameEl,
            0x26 => SpAlignment,
            0x2c => FpException,
            0x2f => SError,
            0x30 | 0x31 => Breakpoint,
            0x32 | 0x33 => SoftwareStep,
            0x34 | 0x35 => Watchpoint,
            0x3c => Brk,
            other => Other(other),
        }
    }

    /// A human name for reports.
    pub const fn name(self) -> &'static str {
        use ExceptionClass::*;
        match self {
            Unknown => "unknown reason (undefined instruction)",
            WfiWfe => "WFI/WFE trapped",
            FpSimdAccess => "FP/SIMD access trapped",
            IllegalExecutionState => "illegal execution state",
            Svc64 => "SVC (AArch64)",
            Hvc64 => "HVC (AArch64)",
            Smc64 => "SMC (AArch64)",
            SysRegTrap => "system register access trapped",
            InstrAbortLowerEl => "instruction abort from a lower EL",
            InstrAbortSameEl => "instruction abort at the same EL",
            PcAlignment => "PC alignment fault",
            DataAbortLowerEl => "data abort from a lower EL",
            DataAbortSameEl => "data abort at the same EL",
            SpAlignment => "SP alignment fault",
            FpException => "floating-point exception",
            SError => "SError interrupt",
            Breakpoint => "breakpoint",
            SoftwareStep => "software step",
            Watchpoint => "watchpoint",
            Brk => "BRK instruction",
            Other(_) => "unnamed exception class",
        }
    }
}

/// Fault status codes of aborts (DFSC/IFSC), the kinds the kernel names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FaultKind {
    /// Address size fault at level n.
    AddressSize(u8),
    /// Translation fault at level n.
    Translation(u8),
    /// Access flag fault at level n.
    AccessFlag(u8),
    /// Permission fault at level n.
    Permission(u8),
    /// Synchronous external abort.
    External,
    /// Alignment fault.
    Alignment,
    /// TLB conflict.
    TlbConflict,
    /// Anything else (raw code).
    Other(u8),
}

impl FaultKind {
    /// Decodes a 6-bit fault status code.
    pub const fn from_fsc(fsc: u8) -> Self {
        let level = fsc & 3;
        match fsc & 0x3f {
            0x00..=0x03 => FaultKind::AddressSize(level),
            0x04..=0x07 => FaultKind::Translation(level),
            0x09..=0x0b => FaultKind::AccessFlag(level),
            0x0d..=0x0f => FaultKind::Permission(level),
            0x10 => FaultKind::External,
            0x21 => FaultKind::Alignment,
            0x30 => FaultKind::TlbConflict,
            other => FaultKind::Other(other),
        }
    }

    /// A human name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            FaultKind::AddressSize(_) => "address size fault",
            FaultKind::Translation(_) => "translation fault",
            FaultKind::AccessFlag(_) => "access flag fault",
            FaultKind::Permission(_) => "permission fault",
            FaultKind::External => "synchronous external abort",
            FaultKind::Alignment => "alignment fault",
            FaultKind::TlbConflict => "TLB conflict abort",
            FaultKind::Other(_) => "other fault",
        }
    }

    /// Translation level the fault happened at, where the code says.
    pub const fn level(self) -> Option<u8> {
        match self {
            FaultKind::AddressSize(l)
            | FaultKind::Translation(l)
            | FaultKind::AccessFlag(l)
            | FaultKind::Permission(l) => Some(l),
            _ => None,
        }
    }
}

impl Esr {
    /// The EC field.
    pub const fn ec(self) -> u8 {
        ((self.0 >> 26) & 0x3f) as u8
    }
    /// The decoded class.
    pub const fn class(self) -> ExceptionClass {
        ExceptionClass::from_ec(self.ec())
    }
    /// The ISS field.
    pub const fn iss(self) -> u32 {
        (self.0 & 0x1ff_ffff) as u32
    }
    /// True for a 32-bit instruction.
    pub const fn il32(self) -> bool {
        self.0 & (1 << 25) != 0
    }
    /// True for instruction and data aborts.
    pub const fn is_abort(self) -> bool {
        matches!(self.ec(), 0x20 | 0x21 | 0x24 | 0x25)
    }
    /// For aborts, the fault kind.
    pub const fn fault(self) -> Option<FaultKind> {
        if self.is_abort() {
            Some(FaultKind::from_fsc((self.0 & 0x3f) as u8))
        } else {
            None
        }
    }
    /// For data aborts, whether the access was a write (WnR, ISS bit 6).
    pub const fn is_write(self) -> bool {
        matches!(self.ec(), 0x24 | 0x25) && self.0 & (1 << 6) != 0
    }
    /// For data aborts, whether the syndrome (ISV, bit 24) describes the access.
    pub const fn isv(self) -> bool {
        matches!(self.ec(), 0x24 | 0x25) && self.0 & (1 << 24) != 0
    }
    /// For data aborts with a valid syndrome, the register transferred (SRT, ISS[20:16];
    /// 31 is the zero register).
    pub const fn srt(self) -> u8 {
        ((self.0 >> 16) & 0x1f) as u8
    }
    /// For SVC/HVC/SMC, the 16-bit immediate.
    pub const fn imm16(self) -> u16 {
        (self.0 & 0xffff) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_classes() {
        let svc = Esr(0x5600_0000);
        assert_eq!(svc.class(), ExceptionClass::Svc64);
        assert!(svc.il32());
        assert_eq!(Esr(0x0200_0000).class(), ExceptionClass::Unknown);
        assert_eq!(Esr(0xbc00_0000).ec(), 0x2f);
        assert_eq!(Esr(0xfc00_0000).class(), ExceptionClass::Other(0x3f));
        assert_eq!(ExceptionClass::from_ec(0x31), ExceptionClass::Breakpoint);
    }

    #[test]
    fn decodes_aborts() {
        // Data abort from EL0: write, translation fault at level 2, ISV set.
        let esr = Esr((0x24 << 26) | (1 << 25) | (1 << 24) | (1 << 6) | 0x06);
        assert_eq!(esr.class(), ExceptionClass::DataAbortLowerEl);
        assert!(esr.is_write());
        assert!(esr.isv());
        assert_eq!(Esr(0x9300_0000 | (7 << 16)).srt(), 7);
        assert_eq!(esr.fault(), Some(FaultKind::Translation(2)));
        assert_eq!(esr.fault().unwrap().level(), Some(2));
        assert_eq!(
            Esr((0x20 << 26) | 0x0f).fault(),
            Some(FaultKind::Permission(3))
        );
        assert_eq!(Esr(0x15 << 26).fault(), None);
        assert!(!Esr(0x20 << 26 | 1 << 6).is_write());
        assert_eq!(FaultKind::from_fsc(0x21), FaultKind::Alignment);
        assert_eq!(FaultKind::from_fsc(0x3f), FaultKind::Other(0x3f));
    }

    #[test]
    fn every_class_has_a_name() {
        for ec in 0..64u8 {
            assert!(!ExceptionClass::from_ec(ec).name().is_empty());
        }
        for fsc in 0..64u8 {
            assert!(!FaultKind::from_fsc(fsc).name().is_empty());
        }
    }
}
