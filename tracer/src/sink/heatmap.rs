//! The heatmap sink (`--heatmap FILE.svg` on histogram tools): a column per
//! round, drawn by view/heatmap.rs and rewritten after each.

use std::{path::Path, time::Duration};

use anyhow::Result;

use crate::sink::{Round, Sink};
use crate::source::{Sample, Source};
use crate::view::heatmap::Heatmap as Picture;

/// A column this often when the run has no interval of its own.
const DEFAULT_EVERY: Duration = Duration::from_secs(1);

pub struct Heatmap {
    picture: Picture,
    every: Duration,
}

impl Heatmap {
    /// Checks that `path` can be written before anything is traced.
    pub fn new(path: &Path, tool: &'static str, interval: Option<Duration>) -> Result<Heatmap> {
        Ok(Heatmap {
            picture: Picture::new(path, tool)?,
            every: interval.unwrap_or(DEFAULT_EVERY),
        })
    }
}

impl Sink for Heatmap {
    fn every(&self) -> Option<Duration> {
        Some(self.every)
    }

    fn sample(
        &mut self,
        _i: usize,
        _source: &dyn Source,
        sample: Sample,
        round: &Round,
    ) -> Result<()> {
        self.picture.add(round.unix, &sample)
    }

    fn reports_at_end(&self) -> bool {
        true
    }
}
