//! The reader every codec's decompressing side goes through: maps codec failures onto
//! [`Error::Corrupted`] and [`Error::Truncated`], and stops for good at the end of the
//! section or at the first failure.
//!
//! Latching matters for correctness, not only for tidiness: after a failed chunk the codec
//! decoders would happily go on with the next chunk, and after a frame's end mark the lz4
//! decoder would go on with the next section's frame. A caller that reads again after an
//! error or after end of data must never be handed bytes from somewhere else.

use std::error::Error as StdError;
use std::io::{self, Read};

use state_api::Error;

/// What the reader needs to know about one codec.
#[derive(Debug)]
pub(crate) struct Codec {
    /// Names the section in errors: `"snappy compressed section"`.
    pub(crate) what: &'static str,
    /// Why a section that ends inside a frame or chunk is judged truncated.
    pub(crate) truncated: &'static str,
    /// The reason text when `error` is one of the codec's own errors, `None` otherwise.
    pub(crate) describe: fn(error: &(dyn StdError + Send + Sync + 'static)) -> Option<String>,
}

impl Codec {
    fn corrupted(&self, reason: String) -> Error {
        Error::Corrupted {
            what: self.what.to_owned(),
            reason,
        }
    }

    fn truncated(&self) -> Error {
        Error::Truncated {
            what: self.what.to_owned(),
            reason: self.truncated.to_owned(),
        }
    }
}

/// A codec's decoder as seen by [`SectionReader`].
pub(crate) trait SectionDecoder: Read {
    /// Asked when the decoder reports end of data: true if that end is a cut, that is the
    /// compressed input ran out before the codec's end mark.
    fn ended_early(&self) -> bool;
}

/// Wraps a codec's decoder: errors mapped, end of section and failures latched.
#[derive(Debug)]
pub(crate) struct SectionReader<D> {
    decoder: D,
    codec: &'static Codec,
    state: State,
}

#[derive(Debug)]
enum State {
    Reading,
    Finished,
    Failed(Failure),
}

/// The first failure, kept to be reported again on every later read.
#[derive(Debug)]
enum Failure {
    Corrupted(String),
    Truncated,
    Io {
        kind: io::ErrorKind,
        message: String,
    },
}

impl<D: SectionDecoder> SectionReader<D> {
    pub(crate) fn new(decoder: D, codec: &'static Codec) -> Self {
        Self {
            decoder,
            codec,
            state: State::Reading,
        }
    }

    /// Maps a decoder error and remembers it.
    fn fail(&mut self, error: io::Error) -> io::Error {
        let carries_ours = error.get_ref().is_some_and(|inner| inner.is::<Error>());
        let described = if carries_ours {
            None
        } else {
            error.get_ref().and_then(self.codec.describe)
        };
        let (failure, error) = if let Some(reason) = described {
            let error = self.codec.corrupted(reason.clone()).into_io();
            (Failure::Corrupted(reason), error)
        } else if !carries_ours && error.kind() == io::ErrorKind::UnexpectedEof {
            (Failure::Truncated, self.codec.truncated().into_io())
        } else {
            // Not the codec's finding (a failing disk, a cancelled stream): passed on as it
            // is the first time, summarised on later reads.
            let failure = Failure::Io {
                kind: error.kind(),
                message: error.to_string(),
            };
            (failure, error)
        };
        self.state = State::Failed(failure);
        error
    }

    fn repeat(&self, failure: &Failure) -> io::Error {
        match failure {
            Failure::Corrupted(reason) => self.codec.corrupted(reason.clone()).into_io(),
            Failure::Truncated => self.codec.truncated().into_io(),
            Failure::Io { kind, message } => io::Error::new(
                *kind,
                format!("{}: an earlier read failed: {message}", self.codec.what),
            ),
        }
    }
}

impl<D: SectionDecoder> Read for SectionReader<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.state {
            State::Reading => {}
            State::Finished => return Ok(0),
            State::Failed(failure) => return Err(self.repeat(failure)),
        }
        if buf.is_empty() {
            return Ok(0);
        }
        match self.decoder.read(buf) {
            Ok(0) if self.decoder.ended_early() => {
                self.state = State::Failed(Failure::Truncated);
                Err(self.codec.truncated().into_io())
            }
            Ok(0) => {
                self.state = State::Finished;
                Ok(0)
            }
            Ok(n) => Ok(n),
            Err(error) => Err(self.fail(error)),
        }
    }
}

/// The compressed input as the decoders see it: interrupted reads are retried here, so a
/// decoder never loses its place in a frame header to an interruption, and the end of the
/// input is remembered for [`SectionDecoder::ended_early`].
#[derive(Debug)]
pub(crate) struct Source<R> {
    inner: R,
    ended: bool,
}

impl<R: Read> Source<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            ended: false,
        }
    }

    /// True once a read asking for bytes got none.
    pub(crate) fn ended(&self) -> bool {
        self.ended
    }
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Ok(n) => {
                    if n == 0 && !buf.is_empty() {
                        self.ended = true;
                    }
                    return Ok(n);
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
        }
    }
}
