//! Caretaker: an edge daemon that turns building telemetry into time series, work orders and energy figures.
