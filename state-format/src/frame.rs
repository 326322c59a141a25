//! Versioned, checksummed frames: the layout every snapshot header of snapstate shares.
//!
//! A header is a body of format-specific fields inside a frame that says what the bytes are,
//! which version wrote them, how long the body is and whether it arrived intact. Integers are
//! big-endian.
//!
//! | field | type | meaning |
//! |---|---|---|
//! | magic | `u32` | [`FrameFormat::magic`]: which kind of header this is |
//! | version | `u32` | [`FrameFormat::current_version`] when written; `0` is never written |
//! | header length | `u32` | bytes of the body, at most [`FrameFormat::max_body_len`] |
//! | body | | defined by the format ([`crate::proxy`], the operator snapshot header) |
//! | checksum | `u32` | CRC-32C (Castagnoli) of the body bytes |
//!
//! The body length comes first so that a reader takes exactly the header from a stream that
//! goes on with other data, and verifies the checksum before it interprets a single body
//! byte. [`BodyCursor`] reads a body's fields and reports where it ends early.
//!
//! # Errors
//!
//! [`FrameFormat::read`] names the frame field in `what` (`<what>: magic`, `<what>: checksum`):
//!
//! - [`Error::Truncated`]: the input ends before the frame does (in the body, the field
//!   the cut falls in is named when the parser can tell);
//! - [`Error::Corrupted`]: wrong magic (the input is something else), version 0, a declared
//!   length over the bound, a checksum mismatch, or what the body parser rejects;
//! - [`Error::UnsupportedVersion`]: written by a newer format version;
//! - [`Error::Stream`]: the underlying reader or writer failed.

use std::fmt;
use std::io::{self, Read, Write};

use state_api::{Error, Result};

/// Bytes of a frame around its body: magic, version, header length and checksum.
pub const FRAME_LEN: u64 = 16;

/// One kind of framed header: its magic, version and bound, and how errors name it.
///
/// # Example
///
/// ```
/// use state_format::frame::{BodyCursor, FrameFormat};
///
/// const NOTES: FrameFormat = FrameFormat {
///     magic: 0x4E4F_5445,
///     current_version: 1,
///     max_body_len: 1024,
///     what: "notes header",
///     kind: "notes file",
/// };
///
/// let mut bytes = Vec::new();
/// NOTES.write(&mut bytes, &[0, 2, b'h', b'i'])?;
/// let text = NOTES.read(&mut bytes.as_slice(), |_version, body| {
///     BodyCursor::new(body).string(&"notes header: text")
/// })?;
/// assert_eq!(text, "hi");
/// # Ok::<(), state_api::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameFormat {
    /// First four bytes of every header of this kind.
    pub magic: u32,
    /// The version this build writes, and the newest one it reads.
    pub current_version: u32,
    /// Largest body a header may declare: keeps a corrupt length from making a reader wait
    /// for, or buffer, gigabytes.
    pub max_body_len: u32,
    /// What errors name as the object at fault (`keyed snapshot header`).
    pub what: &'static str,
    /// What an input with another magic is not (`snapstate keyed snapshot`).
    pub kind: &'static str,
}

impl FrameFormat {
    /// Writes `body` framed with the current version; returns the bytes written.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a body over [`max_body_len`](Self::max_body_len)
    /// (it could not be read back), [`Error::Stream`] when `out` fails.
    pub fn write(&self, out: &mut dyn Write, body: &[u8]) -> Result<u64> {
        let body_len = u32::try_from(body.len())
            .ok()
            .filter(|&len| len <= self.max_body_len)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{} body would be {} bytes, at most {} are allowed: \
                     register fewer states or use shorter names",
                    self.what,
                    body.len(),
                    self.max_body_len
                ))
            })?;
        let mut bytes = Vec::with_capacity(body.len() + FRAME_LEN as usize);
        bytes.extend_from_slice(&self.magic.to_be_bytes());
        bytes.extend_from_slice(&self.current_version.to_be_bytes());
        bytes.extend_from_slice(&body_len.to_be_bytes());
        bytes.extend_from_slice(body);
        bytes.extend_from_slice(&crc32c::crc32c(body).to_be_bytes());
        out.write_all(&bytes)
            .map_err(|e| Error::stream(format!("writing {}", self.what), e))?;
        Ok(u64::from(body_len) + FRAME_LEN)
    }

    /// Reads one frame from `input` and hands its version and verified body to `parse`.
    ///
    /// Exactly the frame's bytes are consumed, so `input` is left at the data that follows.
    /// When the input ends inside the body, `parse` is also called on the bytes that did
    /// arrive, only to name the field the cut falls in.
    ///
    /// # Errors
    ///
    /// See the [module documentation](self#errors).
    pub fn read<T>(
        &self,
        input: &mut dyn Read,
        parse: impl Fn(u32, &[u8]) -> Result<T, BodyError>,
    ) -> Result<T> {
        let magic = self.read_magic(input)?;
        if magic != self.magic {
            return Err(Error::Corrupted {
                what: self.field("magic"),
                reason: format!(
                    "not a {} (magic {magic:#010x}, expected {:#010x})",
                    self.kind, self.magic
                ),
            });
        }

        let version = self.read_u32(input, "version")?;
        if version == 0 {
            return Err(Error::Corrupted {
                what: self.field("version"),
                reason: "version 0 is never written, versions start at 1".to_owned(),
            });
        }
        if version > self.current_version {
            return Err(Error::UnsupportedVersion {
                what: self.what.to_owned(),
                found: version,
                supported: self.current_version,
            });
        }

        let body_len = self.read_u32(input, "header length")?;
        if body_len > self.max_body_len {
            return Err(Error::Corrupted {
                what: self.field("header length"),
                reason: format!(
                    "declares a body of {body_len} bytes, at most {} are allowed",
                    self.max_body_len
                ),
            });
        }

        // `take` bounds what is buffered by the declared length; `read_to_end` grows the
        // buffer with the bytes that actually arrive, so a short input allocates little.
        let mut body = Vec::new();
        Read::take(&mut *input, u64::from(body_len))
            .read_to_end(&mut body)
            .map_err(|e| self.read_failure("body", e))?;
        if body.len() < body_len as usize {
            // Name the field the input ends in; what was read cannot be trusted any further.
            let what = match parse(version, &body) {
                Err(BodyError::EndsIn { field, .. }) => field,
                Ok(_) | Err(BodyError::Invalid(_)) => self.field("body"),
            };
            return Err(Error::Truncated {
                what,
                reason: format!(
                    "input ends after {} of the {body_len} body bytes the header declares",
                    body.len()
                ),
            });
        }

        let recorded = self.read_u32(input, "checksum")?;
        let actual = crc32c::crc32c(&body);
        if recorded != actual {
            return Err(Error::Corrupted {
                what: self.field("checksum"),
                reason: format!(
                    "crc32c of the {body_len} body bytes is {actual:#010x}, \
                     the header records {recorded:#010x}"
                ),
            });
        }

        parse(version, &body).map_err(|e| match e {
            BodyError::EndsIn {
                field,
                needed,
                offset,
                remaining,
            } => Error::Corrupted {
                what: field,
                reason: format!(
                    "the {body_len}-byte body ends inside this field: \
                     {needed} bytes needed at body offset {offset}, {remaining} left"
                ),
            },
            BodyError::Invalid(e) => e,
        })
    }

    /// `<what>: <name>`, how errors name a frame field.
    fn field(&self, name: &str) -> String {
        format!("{}: {name}", self.what)
    }

    /// Reads the magic, telling a foreign input from a cut one: a short input that does not
    /// start like the magic is something else altogether.
    fn read_magic(&self, input: &mut dyn Read) -> Result<u32> {
        let mut bytes = [0; 4];
        let got = self.read_full(input, &mut bytes, "magic")?;
        if got == bytes.len() {
            return Ok(u32::from_be_bytes(bytes));
        }
        let prefix = &bytes[..got];
        if prefix == &self.magic.to_be_bytes()[..got] {
            return Err(Error::Truncated {
                what: self.field("magic"),
                reason: format!("input ends after {got} of 4 bytes"),
            });
        }
        let hex: String = prefix.iter().map(|b| format!("{b:02x}")).collect();
        Err(Error::Corrupted {
            what: self.field("magic"),
            reason: format!(
                "not a {} (the {got}-byte input starts with 0x{hex}, expected magic {:#010x})",
                self.kind, self.magic
            ),
        })
    }

    /// Reads a big-endian `u32` frame field.
    fn read_u32(&self, input: &mut dyn Read, field: &str) -> Result<u32> {
        let mut bytes = [0; 4];
        let got = self.read_full(input, &mut bytes, field)?;
        if got < bytes.len() {
            return Err(Error::Truncated {
                what: self.field(field),
                reason: format!("input ends after {got} of 4 bytes"),
            });
        }
        Ok(u32::from_be_bytes(bytes))
    }

    /// Fills `buf` from `input` unless the input ends first; returns how many bytes were read.
    fn read_full(&self, input: &mut dyn Read, buf: &mut [u8], field: &str) -> Result<usize> {
        let mut filled = 0;
        while let Some(rest) = buf.get_mut(filled..).filter(|rest| !rest.is_empty()) {
            match input.read(rest) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_failure(field, e)),
            }
        }
        Ok(filled.min(buf.len()))
    }

    /// Maps a failure of the reader: an error of ours travelling inside is unwrapped, an
    /// `UnexpectedEof` (a decompressing reader cut short) is a truncation of `field`.
    fn read_failure(&self, field: &str, source: io::Error) -> Error {
        match Error::stream(format!("reading {}", self.what), source) {
            Error::Stream { source, .. } if source.kind() == io::ErrorKind::UnexpectedEof => {
                Error::Truncated {
                    what: self.field(field),
                    reason: format!("input ends early: {source}"),
                }
            }
            other => other,
        }
    }
}

/// Why a body did not parse.
#[derive(Debug)]
pub enum BodyError {
    /// The bytes end inside `field`: a truncation if the input was cut, a corruption if the
    /// checksummed body itself is too short for what it declares.
    EndsIn {
        /// The field, as errors name it.
        field: String,
        /// Bytes the field needed.
        needed: usize,
        /// Body offset of the field.
        offset: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// Anything else, as the error to report.
    Invalid(Error),
}

impl From<Error> for BodyError {
    fn from(error: Error) -> Self {
        BodyError::Invalid(error)
    }
}

/// Reads fields from the front of a buffered body.
#[derive(Debug)]
pub struct BodyCursor<'a> {
    rest: &'a [u8],
    offset: usize,
}

impl<'a> BodyCursor<'a> {
    /// A cursor at the start of `body`.
    pub fn new(body: &'a [u8]) -> Self {
        BodyCursor {
            rest: body,
            offset: 0,
        }
    }

    /// Body offset of the next field.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// The next `n` bytes, or where field `field` ends early.
    ///
    /// # Errors
    ///
    /// [`BodyError::EndsIn`] when fewer than `n` bytes are left.
    pub fn take(&mut self, n: usize, field: &dyn fmt::Display) -> Result<&'a [u8], BodyError> {
        let (head, rest) = self
            .rest
            .split_at_checked(n)
            .ok_or_else(|| BodyError::EndsIn {
                field: field.to_string(),
                needed: n,
                offset: self.offset,
                remaining: self.rest.len(),
            })?;
        self.rest = rest;
        self.offset += n;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    ///
    /// # Errors
    ///
    /// As [`take`](Self::take).
    pub fn array<const N: usize>(
        &mut self,
        field: &dyn fmt::Display,
    ) -> Result<[u8; N], BodyError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N, field)?);
        Ok(array)
    }

    /// The next string: a `u16` byte length and that many bytes of UTF-8.
    ///
    /// # Errors
    ///
    /// As [`take`](Self::take), and [`BodyError::Invalid`] with [`Error::Corrupted`] for
    /// bytes that are not UTF-8.
    pub fn string(&mut self, field: &dyn fmt::Display) -> Result<String, BodyError> {
        let len = u16::from_be_bytes(self.array(field)?);
        let offset = self.offset;
        let bytes = self.take(usize::from(len), field)?;
        let text = std::str::from_utf8(bytes).map_err(|e| {
            BodyError::Invalid(Error::Corrupted {
                what: field.to_string(),
                reason: format!("the {len}-byte string at body offset {offset} is not utf-8: {e}"),
            })
        })?;
        Ok(text.to_owned())
    }
}

/// Appends `value` as a string field (`u16` length, UTF-8 bytes).
///
/// # Errors
///
/// [`Error::InvalidArgument`] naming `field` for a string over 65535 bytes.
pub fn put_str(body: &mut Vec<u8>, value: &str, field: &dyn fmt::Display) -> Result<()> {
    let len = u16::try_from(value.len()).map_err(|_| {
        Error::InvalidArgument(format!(
            "{field} is {} bytes long, at most {} fit",
            value.len(),
            u16::MAX
        ))
    })?;
    body.extend_from_slice(&len.to_be_bytes());
    body.extend_from_slice(value.as_bytes());
    Ok(())
}
