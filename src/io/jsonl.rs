//! Texts from JSON Lines: one JSON string per line, blank lines skipped, read a line at a time so that a
//! file of any length takes constant memory.

use std::io::BufRead;

use crate::error::{Error, Result};

pub struct JsonLines<R> {
    reader: R,
    /// What errors call the input (a path, or "stdin").
    name: String,
    line: usize,
}

impl<R: BufRead> JsonLines<R> {
    pub fn new(reader: R, name: &str) -> Self {
        Self {
            reader,
            name: name.to_owned(),
            line: 0,
        }
    }
}

impl<R: BufRead> Iterator for JsonLines<R> {
    type Item = Result<String>;

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
                        Error::Input(format!("{}: expected a JSON string ({e})", at()))
                    }));
                }
                Err(e) => return Some(Err(Error::Io(format!("{}: {e}", at())))),
            }
        }
    }
}
