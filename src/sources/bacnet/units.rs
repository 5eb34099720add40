//! BACnet engineering units (BACnetEngineeringUnits, ASHRAE 135 clause 21) → Caretaker's unit words
//! (`catalog::units::Unit`), for `caretaker bacnet discover` and the profiles it writes. Units without a
//! Caretaker word map to `none` and keep their BACnet name in the output, so an engineer sees what to fill in.

/// `(BACnet code, BACnet name, Caretaker unit word)`. The word is checked against `Unit::parse` in a test.
pub const UNITS: &[(u32, &str, &str)] = &[
    (2, "milliamperes", "none"),
    (3, "amperes", "A"),
    (5, "volts", "V"),
    (8, "volt-amperes", "VA"),
    (9, "kilovolt-amperes", "kVA"),
    (11, "volt-amperes-reactive", "var"),
    (12, "kilovolt-amperes-reactive", "kvar"),
    (15, "power-factor", "pf"),
    (18, "watt-hours", "Wh"),
    (19, "kilowatt-hours", "kWh"),
    (27, "hertz", "Hz"),
    (29, "percent-relative-humidity", "percent"),
    (37, "luxes", "lux"),
    (47, "watts", "W"),
    (48, "kilowatts", "kW"),
    (49, "megawatts", "MW"),
    (53, "pascals", "Pa"),
    (54, "kilopascals", "kPa"),
    (55, "bars", "bar"),
    (62, "degrees-celsius", "degC"),
    (63, "degrees-kelvin", "K"),
    (64, "degrees-fahrenheit", "degF"),
    (71, "hours", "h"),
    (73, "seconds", "s"),
    (74, "meters-per-second", "m/s"),
    (80, "cubic-meters", "m3"),
    (82, "liters", "l"),
    (84, "cubic-feet-per-minute", "none"),
    (87, "liters-per-second", "l/s"),
    (88, "liters-per-minute", "l/min"),
    (90, "degrees-angular", "deg"),
    (95, "no-units", "none"),
    (96, "parts-per-million", "ppm"),
    (97, "parts-per-billion", "ppb"),
    (98, "percent", "percent"),
    (104, "revolutions-per-minute", "rpm"),
    (121, "delta-degrees-kelvin", "K"),
    (135, "cubic-meters-per-hour", "m3/h"),
    (146, "megawatt-hours", "MWh"),
    (199, "decibels", "dB"),
    (219, "micrograms-per-cubic-meter", "ug/m3"),
];

/// The BACnet name and the Caretaker unit word of a units code.
pub fn lookup(code: u32) -> (String, &'static str) {
    match UNITS.iter().find(|u| u.0 == code) {
        Some((_, name, word)) => (name.to_string(), word),
        None => (format!("units-{code}"), "none"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_mapped_word_is_a_caretaker_unit() {
        for (code, name, word) in super::UNITS {
            assert!(
                crate::catalog::Unit::parse(word).is_some(),
                "{code} {name} -> {word}"
            );
        }
        assert_eq!(super::lookup(62).1, "degC");
        assert_eq!(super::lookup(9999).1, "none");
    }
}
