//! Where readings leave the process.

pub mod influx;
