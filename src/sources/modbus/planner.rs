//! The request planner: which read requests fetch a set of due points at the least cost.
//!
//! Cost model (in bit-times on the wire, so registers and coils share one scale): every request costs
//! [`CostModel::per_request`] (the round trip: headers, CRC or MBAP, turnaround, the device's reply latency),
//! plus [`CostModel::per_register`] per register or [`CostModel::per_bit`] per coil it reads, whether a point
//! needs it or not. Reading a gap of unused registers is worth it when the gap costs less than another round trip.
//!
//! Constraints: a request reads one table, at most `max_registers_per_request` registers (≤ 125) or
//! `max_bits_per_request` bits (≤ 2000); a point is never split over two requests (a 32-bit value read in two
//! halves could mix two samples); a run of unused registers inside a request is at most `max_gap` long and never
//! crosses a register the device refused before (a *barrier*, learnt from exceptions).
//!
//! Optimality: in an optimal plan no request's range contains another's (drop the inner one), so requests sorted
//! by start are also sorted by end, and giving each point to the first request that contains it assigns
//! *consecutive points in end-address order* to each request (a point ending later that went to an earlier
//! request would have to start before that request, a contradiction). So a dynamic programme over points sorted
//! by end address, choosing where each group starts, finds the optimum over all partitions. The unit test
//! `planner_is_optimal_against_exhaustive_search` checks it against brute force over every partition.

use crate::catalog::modbus_binding::Table;
use std::collections::BTreeSet;

/// One point to read: `width` registers (or 1 bit) from `start` in `table`; `key` is the caller's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    pub key: u32,
    pub table: Table,
    pub start: u16,
    pub width: u16,
}

impl Item {
    fn end(&self) -> u32 {
        self.start as u32 + self.width as u32
    }
}

/// The profile's limits that shape requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_registers: u16,
    pub max_bits: u16,
    /// Longest run of unread-for-a-point registers a request may carry; `None`: the cost model decides.
    pub max_gap: Option<u16>,
    pub one_request_per_point: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_registers: 125,
            max_bits: 2000,
            max_gap: None,
            one_request_per_point: false,
        }
    }
}

impl Limits {
    pub fn from_quirks(q: &crate::catalog::modbus_binding::ModbusQuirks) -> Limits {
        Limits {
            max_registers: q.max_registers_per_request.clamp(1, 125),
            max_bits: q.max_bits_per_request.clamp(1, 2000),
            max_gap: q.max_gap,
            one_request_per_point: q.one_request_per_point,
        }
    }
    fn max_len(&self, table: Table) -> u32 {
        if table.is_bits() {
            self.max_bits as u32
        } else {
            self.max_registers as u32
        }
    }
}

/// What a request costs, in bit-times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CostModel {
    pub per_request: u64,
    pub per_register: u64,
    pub per_bit: u64,
}

impl Default for CostModel {
    /// A round trip is worth about 20 registers: at 9600 baud RTU a request and reply header, CRCs and two
    /// 3.5-character silences take ~20 ms, the same as 20 registers of payload; on TCP the round trip dominates
    /// even more, so merging further never hurts there beyond the protocol limits.
    fn default() -> Self {
        CostModel {
            per_request: 320,
            per_register: 16,
            per_bit: 1,
        }
    }
}

impl CostModel {
    pub fn request(&self, table: Table, len: u32) -> u64 {
        let unit = if table.is_bits() {
            self.per_bit
        } else {
            self.per_register
        };
        self.per_request + unit * len as u64
    }
}

/// Registers (per table) the device refused to read as filler; requests never read them unless a point
/// covers them.
pub type Barriers = BTreeSet<(Table, u16)>;

/// One read request and the points it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub table: Table,
    pub start: u16,
    pub count: u16,
    /// Indices into the planned items, in address order.
    pub items: Vec<usize>,
}

/// Total cost of a plan.
pub fn plan_cost(reqs: &[Request], cost: &CostModel) -> u64 {
    reqs.iter()
        .map(|r| cost.request(r.table, r.count as u32))
        .sum()
}

/// The least-cost plan for `items` (see the module docs for the model and the proof).
pub fn plan(
    items: &[Item],
    limits: &Limits,
    cost: &CostModel,
    barriers: &Barriers,
) -> Vec<Request> {
    if limits.one_request_per_point {
        return naive(items);
    }
    let mut out = Vec::new();
    for table in [Table::Coil, Table::Discrete, Table::Input, Table::Holding] {
        let mut idx: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].table == table)
            .collect();
        if idx.is_empty() {
            continue;
        }
        idx.sort_by_key(|&i| (items[i].end(), items[i].start, i));
        plan_table(items, &idx, table, limits, cost, barriers, &mut out);
    }
    out
}

/// A run of registers no item covers, with whether a barrier lies in it.
#[derive(Debug, Clone, Copy)]
struct Gap {
    start: u32,
    end: u32,
    barrier: bool,
}

fn gaps_of(items: &[Item], idx: &[usize], table: Table, barriers: &Barriers) -> Vec<Gap> {
    let mut spans: Vec<(u32, u32)> = idx
        .iter()
        .map(|&i| (items[i].start as u32, items[i].end()))
        .collect();
    spans.sort_unstable();
    let mut gaps = Vec::new();
    let mut covered_to = spans[0].1;
    for &(s, e) in &spans[1..] {
        if s > covered_to {
            let barrier = barriers
                .range((table, covered_to as u16)..=(table, (s - 1) as u16))
                .next()
                .is_some();
            gaps.push(Gap {
                start: covered_to,
                end: s,
                barrier,
            });
        }
        covered_to = covered_to.max(e);
    }
    gaps
}

fn plan_table(
    items: &[Item],
    idx: &[usize],
    table: Table,
    limits: &Limits,
    cost: &CostModel,
    barriers: &Barriers,
    out: &mut Vec<Request>,
) {
    let n = idx.len();
    let max_len = limits.max_len(table);
    let gaps = gaps_of(items, idx, table, barriers);
    let gap_ok = |g: &Gap| !g.barrier && limits.max_gap.is_none_or(|m| g.end - g.start <= m as u32);
    // best[k]: least (cost, requests) for the first k points in end order; from[k]: where the last group starts.
    let mut best: Vec<(u64, u32)> = vec![(u64::MAX, u32::MAX); n + 1];
    let mut from = vec![0usize; n + 1];
    best[0] = (0, 0);
    // Gaps ending at or before the current group's end form a prefix of `gaps`.
    let mut gap_prefix = 0usize;
    for k in 1..=n {
        let end = items[idx[k - 1]].end();
        while gap_prefix < gaps.len() && gaps[gap_prefix].end <= end {
            gap_prefix += 1;
        }
        let mut min_start = u32::MAX;
        let mut g = gap_prefix; // gaps[..g] not yet known to lie inside the window
        for j in (0..k).rev() {
            min_start = min_start.min(items[idx[j]].start as u32);
            let len = end - min_start;
            if len > max_len {
                break; // windows only grow as j decreases
            }
            let mut feasible = true;
            while g > 0 && gaps[g - 1].start >= min_start {
                if !gap_ok(&gaps[g - 1]) {
                    feasible = false;
                    break;
                }
                g -= 1;
            }
            if !feasible {
                break; // the bad gap stays inside every larger window
            }
            if best[j].0 == u64::MAX {
                continue;
            }
            let cand = (best[j].0 + cost.request(table, len), best[j].1 + 1);
            if cand < best[k] {
                best[k] = cand;
                from[k] = j;
            }
        }
        if best[k].0 == u64::MAX {
            // Only when one point alone is wider than the limit (profiles are validated against this): read it
            // alone and let the device answer.
            best[k] = (
                best[k - 1]
                    .0
                    .saturating_add(cost.request(table, items[idx[k - 1]].width as u32)),
                best[k - 1].1 + 1,
            );
            from[k] = k - 1;
        }
    }
    let mut groups = Vec::new();
    let mut k = n;
    while k > 0 {
        groups.push((from[k], k));
        k = from[k];
    }
    for (j, k) in groups.into_iter().rev() {
        let mut members: Vec<usize> = idx[j..k].to_vec();
        members.sort_by_key(|&i| (items[i].start, i));
        let start = members.iter().map(|&i| items[i].start).min().unwrap_or(0);
        let end = members.iter().map(|&i| items[i].end()).max().unwrap_or(0);
        out.push(Request {
            table,
            start,
            count: (end - start as u32) as u16,
            items: members,
        });
    }
}

/// One request per point: the baseline, and what `one_request_per_point` asks for.
pub fn naive(items: &[Item]) -> Vec<Request> {
    let mut idx: Vec<usize> = (0..items.len()).collect();
    idx.sort_by_key(|&i| (items[i].table, items[i].start, i));
    idx.into_iter()
        .map(|i| Request {
            table: items[i].table,
            start: items[i].start,
            count: items[i].width,
            items: vec![i],
        })
        .collect()
}

/// Merges only points that touch or overlap (no gap reading), greedily in address order: the comparison
/// baseline for the benchmark.
pub fn contiguous(items: &[Item], limits: &Limits) -> Vec<Request> {
    let mut idx: Vec<usize> = (0..items.len()).collect();
    idx.sort_by_key(|&i| (items[i].table, items[i].start, i));
    let mut out: Vec<Request> = Vec::new();
    for i in idx {
        let it = items[i];
        if let Some(r) = out.last_mut() {
            let r_end = r.start as u32 + r.count as u32;
            let new_end = r_end.max(it.end());
            if r.table == it.table
                && it.start as u32 <= r_end
                && new_end - r.start as u32 <= limits.max_len(it.table)
            {
                r.count = (new_end - r.start as u32) as u16;
                r.items.push(i);
                continue;
            }
        }
        out.push(Request {
            table: it.table,
            start: it.start,
            count: it.width,
            items: vec![i],
        });
    }
    out
}

/// Checks that a plan reads every item whole, exactly once, within the limits. For tests and debug builds.
pub fn validate(items: &[Item], reqs: &[Request], limits: &Limits) -> Result<(), String> {
    let mut seen = vec![false; items.len()];
    for r in reqs {
        if r.count as u32 > limits.max_len(r.table) && r.items.len() > 1 {
            return Err(format!("{r:?} exceeds the limit"));
        }
        for &i in &r.items {
            let it = &items[i];
            if it.table != r.table
                || it.start < r.start
                || it.end() > r.start as u32 + r.count as u32
            {
                return Err(format!("{r:?} does not cover {it:?}"));
            }
            if std::mem::replace(&mut seen[i], true) {
                return Err(format!("{it:?} read twice"));
            }
        }
    }
    match seen.iter().position(|s| !s) {
        Some(i) => Err(format!("{:?} never read", items[i])),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(key: u32, start: u16, width: u16) -> Item {
        Item {
            key,
            table: Table::Holding,
            start,
            width,
        }
    }

    /// Brute force: the least cost over every partition of the items into feasible requests.
    fn exhaustive(items: &[Item], limits: &Limits, cost: &CostModel, barriers: &Barriers) -> u64 {
        fn feasible(
            all: &[Item],
            group: &[usize],
            limits: &Limits,
            barriers: &Barriers,
        ) -> Option<u32> {
            let t = all[group[0]].table;
            if group.iter().any(|&i| all[i].table != t) {
                return None;
            }
            let s = group.iter().map(|&i| all[i].start as u32).min().unwrap();
            let e = group.iter().map(|&i| all[i].end()).max().unwrap();
            if e - s > limits.max_len(t) {
                return None;
            }
            // Every register in [s, e) no item of the whole set covers is filler: check runs and barriers.
            let covered = |r: u32| {
                all.iter()
                    .any(|it| it.table == t && it.start as u32 <= r && r < it.end())
            };
            let mut run = 0u32;
            for r in s..e {
                if covered(r) {
                    run = 0;
                    continue;
                }
                run += 1;
                if barriers.contains(&(t, r as u16)) {
                    return None;
                }
                if limits.max_gap.is_some_and(|m| run > m as u32) {
                    return None;
                }
            }
            Some(e - s)
        }
        fn rec(
            all: &[Item],
            i: usize,
            groups: &mut Vec<Vec<usize>>,
            limits: &Limits,
            cost: &CostModel,
            barriers: &Barriers,
            best: &mut u64,
        ) {
            if i == all.len() {
                let mut total = 0;
                for g in groups.iter() {
                    match feasible(all, g, limits, barriers) {
                        Some(len) => total += cost.request(all[g[0]].table, len),
                        None => return,
                    }
                }
                *best = (*best).min(total);
                return;
            }
            for gi in 0..groups.len() {
                groups[gi].push(i);
                rec(all, i + 1, groups, limits, cost, barriers, best);
                groups[gi].pop();
            }
            groups.push(vec![i]);
            rec(all, i + 1, groups, limits, cost, barriers, best);
            groups.pop();
        }
        let mut best = u64::MAX;
        rec(items, 0, &mut Vec::new(), limits, cost, barriers, &mut best);
        best
    }

    #[test]
    fn planner_is_optimal_against_exhaustive_search() {
        let mut rng = fastrand::Rng::with_seed(0x5eed_cafe);
        let mut merged_across_gaps = 0;
        for case in 0..3000 {
            let n = rng.usize(1..=7);
            let bits = rng.u8(0..5) == 0;
            let table = if bits {
                Table::Coil
            } else if rng.bool() {
                Table::Holding
            } else {
                Table::Input
            };
            let mut items: Vec<Item> = (0..n)
                .map(|k| Item {
                    key: k as u32,
                    // A second table now and then, to check tables never mix.
                    table: if !bits && rng.u8(0..6) == 0 {
                        Table::Input
                    } else {
                        table
                    },
                    start: rng.u16(0..48),
                    width: if bits {
                        1
                    } else {
                        [1, 1, 2, 2, 4, 3][rng.usize(0..6)]
                    },
                })
                .collect();
            items.iter_mut().for_each(|it| {
                if it.table.is_bits() {
                    it.width = 1
                }
            });
            let limits = Limits {
                max_registers: rng.u16(4..=24),
                max_bits: rng.u16(4..=24),
                max_gap: if rng.bool() {
                    Some(rng.u16(0..6))
                } else {
                    None
                },
                one_request_per_point: false,
            };
            let cost = CostModel {
                per_request: rng.u64(1..=80),
                per_register: rng.u64(1..=8),
                per_bit: rng.u64(1..=3),
            };
            let mut barriers = Barriers::new();
            for _ in 0..rng.usize(0..3) {
                barriers.insert((table, rng.u16(0..52)));
            }
            let got = plan(&items, &limits, &cost, &barriers);
            validate(&items, &got, &limits).unwrap_or_else(|e| panic!("case {case}: {e}"));
            let want = exhaustive(&items, &limits, &cost, &barriers);
            assert_eq!(
                plan_cost(&got, &cost),
                want,
                "case {case}: {items:?} {limits:?} {cost:?} {barriers:?} -> {got:?}"
            );
            if got.iter().any(|r| {
                let used: u32 = r.items.iter().map(|&i| items[i].width as u32).sum();
                r.items.len() > 1 && used < r.count as u32
            }) {
                merged_across_gaps += 1;
            }
        }
        // The random maps must exercise gap merging, or the test proves little.
        assert!(merged_across_gaps > 300, "{merged_across_gaps}");
    }

    #[test]
    fn merges_across_cheap_gaps_but_not_expensive_ones() {
        let cost = CostModel::default(); // a round trip = 20 registers
        let items = [reg(0, 0, 2), reg(1, 10, 2), reg(2, 100, 2)];
        let p = plan(&items, &Limits::default(), &cost, &Barriers::new());
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!((p[0].start, p[0].count), (0, 12));
        assert_eq!((p[1].start, p[1].count), (100, 2));
        // max_gap forbids the 8-register gap.
        let l = Limits {
            max_gap: Some(4),
            ..Limits::default()
        };
        assert_eq!(plan(&items, &l, &cost, &Barriers::new()).len(), 3);
        // So does a barrier inside it.
        let b: Barriers = [(Table::Holding, 5)].into();
        assert_eq!(plan(&items, &Limits::default(), &cost, &b).len(), 3);
    }

    #[test]
    fn protocol_limits_hold() {
        // 200 contiguous u32s = 400 registers: at least 4 requests of ≤125, none splitting a value.
        let items: Vec<Item> = (0..200).map(|k| reg(k, k as u16 * 2, 2)).collect();
        let p = plan(
            &items,
            &Limits::default(),
            &CostModel::default(),
            &Barriers::new(),
        );
        validate(&items, &p, &Limits::default()).unwrap();
        assert_eq!(p.len(), 4);
        assert!(p.iter().all(|r| r.count <= 125 && r.count % 2 == 0));
        let coils: Vec<Item> = (0..3000)
            .map(|k| Item {
                key: k,
                table: Table::Coil,
                start: k as u16,
                width: 1,
            })
            .collect();
        let p = plan(
            &coils,
            &Limits::default(),
            &CostModel::default(),
            &Barriers::new(),
        );
        assert_eq!(p.len(), 2);
        assert!(p.iter().all(|r| r.count <= 2000));
    }

    #[test]
    fn baselines() {
        let items = [reg(0, 0, 2), reg(1, 2, 2), reg(2, 6, 2)];
        assert_eq!(naive(&items).len(), 3);
        assert_eq!(contiguous(&items, &Limits::default()).len(), 2);
        assert_eq!(
            plan(
                &items,
                &Limits::default(),
                &CostModel::default(),
                &Barriers::new()
            )
            .len(),
            1
        );
        let one = Limits {
            one_request_per_point: true,
            ..Limits::default()
        };
        assert_eq!(
            plan(&items, &one, &CostModel::default(), &Barriers::new()).len(),
            3
        );
    }
}
