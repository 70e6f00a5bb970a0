//! Inputs from JSON Lines: one JSON value per line (a string, or an object such as a text pair), blank lines
//! skipped, read a line at a time so that a file of any length takes memory in its longest line.

use std::io::BufRead;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

pub struct JsonLines<R, T = String> {
    reader: R,
    /// What errors call the input (a path, or "stdin").
    name: String,
    /// What each line must be, for errors.
    expected: &'static str,
    line: usize,
    item: PhantomData<T>,
}

impl<R: BufRead> JsonLines<R> {
    /// Lines of JSON strings.
    pub fn new(reader: R, name: &str) -> Self {
        Self::of(reader, name, "a JSON string")
    }
}

impl<R: BufRead, T> JsonLines<R, T> {
    /// Lines of `T`, each `expected` (as errors say it).
    pub fn of(reader: R, name: &str, expected: &'static str) -> Self {
        Self {
            reader,
            name: name.to_owned(),
            expected,
            line: 0,
            item: PhantomData,
        }
    }
}

impl<R: BufRead, T: DeserializeOwned> Iterator for JsonLines<R, T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut line = String::new();
        loop {
            line.clear();
            self.line += 1;
            let at = || format!("{} line {}", self.name, self.line);
            match self.reader.read_line(&mut line) {
                Ok(0) => return None,
                Ok(_) if line.trim().is_empty() => continue,
                Ok(_) => {
                    return Some(serde_json::from_str(&line).map_err(|e| {
                        Error::Input(format!("{}: expected {} ({e})", at(), self.expected))
                    }));
                }
                Err(e) => return Some(Err(Error::Io(format!("{}: {e}", at())))),
            }
        }
    }
}
