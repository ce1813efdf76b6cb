//! How log records travel from the kernel to the host.
//!
//! The console UART carries a byte stream of records. Each record is one **tag byte**
//! naming the component that produced it, followed by one defmt frame in rzCOBS encoding,
//! which ends with its `0x00` delimiter and contains no other zero byte. The host splits
//! the stream at zero bytes, reads the tag, and decodes the rest with the defmt table of
//! that component's ELF.
//!
//! Tags are assigned by the kernel, never by the producer: a task hands the kernel an
//! encoded frame through the log syscall and the kernel prefixes the task's own tag, so no
//! task can make its output look like the kernel's or another task's.

/// The kernel's own frames.
pub const TAG_KERNEL: u8 = 0x01;
/// Frames from the boot task in payload slot `i` carry `TAG_TASK_BASE + i`.
pub const TAG_TASK_BASE: u8 = 0x10;
/// Longest frame a task may hand to the log syscall, delimiter included.
pub const MAX_TASK_FRAME: usize = 512;

/// The tag for boot-task slot `slot`.
pub const fn task_tag(slot: usize) -> u8 {
    TAG_TASK_BASE + slot as u8
}

/// The task slot a tag names, if it names one.
pub const fn tag_slot(tag: u8) -> Option<usize> {
    if tag >= TAG_TASK_BASE && ((tag - TAG_TASK_BASE) as usize) < crate::bootimage::MAX_TASKS {
        Some((tag - TAG_TASK_BASE) as usize)
    } else {
        None
    }
}

/// Why a task's frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FrameError {
    /// Empty or longer than [`MAX_TASK_FRAME`].
    BadLength,
    /// Does not end with the `0x00` delimiter.
    NoDelimiter,
    /// Holds a `0x00` before its end (it would split into a forged record).
    EmbeddedDelimiter,
}

/// Checks that `frame` is exactly one delimited rzCOBS frame.
pub fn check_task_frame(frame: &[u8]) -> Result<(), FrameError> {
    if frame.is_empty() || frame.len() > MAX_TASK_FRAME {
        return Err(FrameError::BadLength);
    }
    let (last, body) = frame.split_last().ok_or(FrameError::BadLength)?;
    if *last != 0 {
        return Err(FrameError::NoDelimiter);
    }
    if body.contains(&0) {
        return Err(FrameError::EmbeddedDelimiter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        assert_eq!(tag_slot(task_tag(0)), Some(0));
        assert_eq!(tag_slot(task_tag(31)), Some(31));
        assert_eq!(tag_slot(TAG_KERNEL), None);
        assert_eq!(tag_slot(TAG_TASK_BASE + 32), None);
    }

    #[test]
    fn frames_are_checked() {
        assert_eq!(check_task_frame(&[5, 6, 0]), Ok(()));
        assert_eq!(check_task_frame(&[]), Err(FrameError::BadLength));
        assert_eq!(check_task_frame(&[5, 6]), Err(FrameError::NoDelimiter));
        assert_eq!(
            check_task_frame(&[5, 0, 6, 0]),
            Err(FrameError::EmbeddedDelimiter)
        );
        assert_eq!(check_task_frame(&[1; 513]), Err(FrameError::BadLength));
    }
}
