//! The load-balancing files (`*.gslb.toml`): sites, checks, pools and names validated into
//! the runtime model, every error naming file, line and object; and the builder that gathers a
//! whole config before [`super::Config`] is made.

use super::check::{check_kind, Timing};
use super::*;

/// A zone's DNSSEC keys and how it signs with them.
pub(super) type ZoneDnssec = (
    Arc<[crate::dnssec::ZoneKey]>,
    Option<Arc<crate::dnssec::ZoneSigning>>,
);

#[derive(Default)]
pub(super) struct Builder {
    pub(super) zones: Vec<Zone>,
    pub(super) zone_ecs: Vec<bool>,
    pub(super) zone_keys: Vec<ZoneDnssec>,
    pub(super) zone_transfer: Vec<Option<Transfer>>,
    pub(super) keys: Vec<TsigKey>,
    pub(super) geo: Option<Arc<Mmdb>>,
    pub(super) geo_path: Option<PathBuf>,
    pub(super) bindings: Vec<Binding>,
    pub(super) pools: Vec<Pool>,
    /// Pool name (per zone's gslb file, qualified as `zone/pool` internally) -> index.
    pub(super) probes: HashMap<ProbeSpec, Vec<MemberId>>,
    pub(super) probe_order: Vec<ProbeSpec>,
    pub(super) steering: Steering,
    pub(super) sources: Vec<PathBuf>,
    pub(super) warnings: Vec<String>,
}

impl Builder {
    pub(super) fn add_gslb(
        &mut self,
        zone_idx: usize,
        text: &str,
        file: &Path,
    ) -> Result<(), ConfigError> {
        let parsed: GslbFile = parse_toml(text, file)?;
        let lines = Lines::new(text);
        let invalid =
            |span: std::ops::Range<usize>, object: Object, message: String| ConfigError::Invalid {
                file: file.to_path_buf(),
                line: lines.line(span.start),
                object,
                message,
            };

        // Sites: where members are, for geo policies, and how they shed load.
        let mut sites: BTreeMap<String, Option<Coords>> = BTreeMap::new();
        let mut site_rules: HashMap<&str, LoadRules> = HashMap::new();
        for (name, site) in &parsed.site {
            let object = || Object::Site(name.clone());
            let rules = LoadRules {
                shed: match &site.get_ref().shed {
                    Some(shed) => {
                        Some(shed_rule(shed).map_err(|m| invalid(site.span(), object(), m))?)
                    }
                    None => None,
                },
                passive: match &site.get_ref().passive {
                    Some(p) => {
                        Some(passive_rule(p).map_err(|m| invalid(site.span(), object(), m))?)
                    }
                    None => None,
                },
            };
            if rules != LoadRules::default() {
                site_rules.insert(name.as_str(), rules);
            }
            let location =
                match site.get_ref().location {
                    None => None,
                    Some([lat, lon]) if lat.abs() <= 90.0 && lon.abs() <= 180.0 => {
                        Some(Coords { lat, lon })
                    }
                    Some(_) => return Err(invalid(
                        site.span(),
                        Object::Site(name.clone()),
                        "location must be [latitude, longitude] within [-90, 90] and [-180, 180]"
                            .into(),
                    )),
                };
            sites.insert(name.clone(), location);
        }

        // Checks first: pools refer to them.
        let mut checks: HashMap<&str, (Option<ProbeKind>, Timing)> = HashMap::new();
        for (name, c) in &parsed.check {
            let object = Object::Check(name.clone());
            let kind =
                check_kind(c.get_ref(), file).map_err(|m| invalid(c.span(), object.clone(), m))?;
            let timing =
                Timing::of(c.get_ref()).map_err(|m| invalid(c.span(), object.clone(), m))?;
            if timing.timeout > timing.interval {
                self.warnings.push(format!(
                    "{}:{}: {object}: timeout {:?} is longer than the interval {:?}: probes overlap",
                    file.display(),
                    lines.line(c.span().start),
                    timing.timeout,
                    timing.interval
                ));
            }
            checks.insert(name.as_str(), (kind, timing));
        }

        // Site names, shared by members and policies of this file.
        let mut interned: HashMap<String, SiteName> = HashMap::new();

        // Pools: local name -> global index.
        let mut pool_index: HashMap<&str, usize> = HashMap::new();
        for (pname, p) in &parsed.pool {
            let pobject = Object::Pool(pname.clone());
            let check = match &p.get_ref().check {
                None => None,
                Some(c) => Some(checks.get(c.as_str()).ok_or_else(|| {
                    invalid(p.span(), pobject.clone(), format!("unknown check {c:?}"))
                })?),
            };
            if p.get_ref().members.is_empty() {
                return Err(invalid(
                    p.span(),
                    pobject,
                    "a pool needs at least one member".into(),
                ));
            }
            let mut members: Vec<Member> = Vec::new();
            for (i, m) in p.get_ref().members.iter().enumerate() {
                let object = Object::Member {
                    pool: pname.clone(),
                    index: i + 1,
                };
                let err = |message: String| invalid(m.span(), object.clone(), message);
                let fm = m.get_ref();
                if fm.site.is_empty() || fm.site.contains('/') {
                    return Err(err("site must be a non-empty name without '/'".into()));
                }
                // An address, or an address and port (a server behind a site proxy: DNS
                // answers the address alone).
                let mut port = None;
                let target = match (&fm.address, &fm.cname) {
                    (Some(a), None) => match (a.parse::<IpAddr>(), a.parse::<SocketAddr>()) {
                        (Ok(ip), _) => Target::Addr(ip),
                        (_, Ok(sa)) => {
                            port = Some(sa.port());
                            Target::Addr(sa.ip())
                        }
                        _ => {
                            return Err(err(format!(
                            "address {a:?} is not an IPv4 or IPv6 address (with a port or without)"
                        )))
                        }
                    },
                    (None, Some(c)) => {
                        let n =
                            Name::from_ascii(c).map_err(|e| err(format!("cname {c:?}: {e}")))?;
                        if !n.is_fqdn() {
                            return Err(err(format!(
                                "cname {c:?} must be fully qualified (end with '.')"
                            )));
                        }
                        Target::Alias(fqdn_lower(&n).to_string())
                    }
                    _ => return Err(err("give exactly one of address or cname".into())),
                };
                let weight = fm.weight.unwrap_or(1);
                if weight <= 0 {
                    return Err(err("weight must be greater than 0".into()));
                }
                if weight > 1_000_000 {
                    return Err(err("weight must be at most 1000000".into()));
                }
                let target_text = match (&target, port) {
                    (Target::Addr(a), Some(port)) => SocketAddr::new(*a, port).to_string(),
                    (Target::Addr(a), None) => a.to_string(),
                    (Target::Alias(n), _) => n.clone(),
                };
                let id = MemberId::new(&fm.site, &target_text);
                if members.iter().any(|o| o.id == id) {
                    return Err(err(format!("duplicate member {id}")));
                }
                if let Some(rules) = site_rules.get(fm.site.as_str()) {
                    let Some((Some(ProbeKind::ProxyLoad { .. }), timing)) = check else {
                        return Err(err(format!(
                            "site {:?} sheds load or judges what its clients got, which its \
                             pool's check must read: give the pool a check of kind \"proxy-load\"",
                            fm.site
                        )));
                    };
                    let mut rules = *rules;
                    if let Some(p) = &mut rules.passive {
                        p.rise = timing.rise;
                    }
                    self.steering.insert(id.clone(), rules);
                }
                if let Some((kind, timing)) = check {
                    if let Some(kind) = kind {
                        let spec =
                            probe_spec(kind.clone(), timing, fm, &target, port).map_err(&err)?;
                        if !self.probes.contains_key(&spec) {
                            self.probe_order.push(spec.clone());
                        }
                        let list = self.probes.entry(spec).or_default();
                        if !list.contains(&id) {
                            list.push(id.clone());
                        }
                    }
                } else if fm.probe.is_some() {
                    return Err(err("probe given but the pool has no check".into()));
                }
                members.push(Member {
                    id,
                    site: intern(&mut interned, &fm.site),
                    target,
                    port,
                    weight: weight as u32,
                    priority: fm.priority.unwrap_or(1),
                });
            }
            let safety = DrainSafety {
                min_usable: p.get_ref().min_usable.unwrap_or(1),
                min_weight_percent: p.get_ref().min_weight_percent.unwrap_or(0),
            };
            if safety.min_weight_percent > 100 {
                return Err(invalid(
                    p.span(),
                    pobject,
                    "min_weight_percent is at most 100".into(),
                ));
            }
            pool_index.insert(pname.as_str(), self.pools.len());
            self.pools.push(Pool {
                name: pname.clone(),
                members,
                safety,
            });
        }

        // Names.
        let zone = &mut self.zones[zone_idx];
        let zone_neg_ttl = zone.negative_soa().ttl;
        // One copy of the path for every name of the file (a file may declare 100,000).
        let shared_file: Arc<Path> = Arc::from(file);
        for n in &parsed.name {
            let fname = n.get_ref();
            let object = Object::Name(fname.name.clone());
            let err = |message: String| invalid(n.span(), object.clone(), message);
            let owner = if fname.name == "@" {
                zone.origin.clone()
            } else {
                Name::parse(&fname.name, Some(&zone.origin))
                    .map(|n| fqdn_lower(&n))
                    .map_err(|e| err(format!("bad name: {e}")))?
            };
            if !zone.origin.zone_of(&owner) {
                return Err(err(format!("not inside zone {}", zone.origin)));
            }
            if owner.is_wildcard() {
                return Err(err("a load-balanced name cannot be a wildcard".into()));
            }
            let pool = *pool_index
                .get(fname.pool.as_str())
                .ok_or_else(|| err(format!("unknown pool {:?}", fname.pool)))?;
            let fallback_pool = fname
                .fallback
                .as_ref()
                .and_then(|f| pool_index.get(f.as_str()).copied());
            let member_sites: Vec<&str> = [Some(pool), fallback_pool]
                .into_iter()
                .flatten()
                .flat_map(|p| self.pools[p].members.iter().map(|m| &*m.site))
                .collect();
            let policy = build_policy(
                fname,
                &sites,
                &member_sites,
                file,
                self.geo.is_some(),
                &mut self.sources,
                &mut interned,
            )
            .map_err(&err)?;
            let (mut a, mut aaaa) = (false, false);
            for t in fname
                .types
                .clone()
                .unwrap_or_else(|| vec!["A".into(), "AAAA".into()])
            {
                match t.to_ascii_uppercase().as_str() {
                    "A" => a = true,
                    "AAAA" => aaaa = true,
                    other => {
                        return Err(err(format!(
                            "type {other:?} cannot be load-balanced (A or AAAA)"
                        )))
                    }
                }
            }
            let ttl = match &fname.ttl {
                None => 30,
                Some(v) => v.get().map_err(&err)?.as_secs() as u32,
            };
            let answers = fname.answers.unwrap_or(1);
            if !(1..=64).contains(&answers) {
                return Err(err("answers must be between 1 and 64".into()));
            }
            let when_all_down = match (
                fname.when_all_down.as_deref().unwrap_or("fail-open"),
                &fname.fallback,
            ) {
                ("fail-open", None) => WhenAllDown::FailOpen,
                ("nodata", None) => WhenAllDown::Nothing,
                ("fallback", Some(fb)) => {
                    let idx = *pool_index
                        .get(fb.as_str())
                        .ok_or_else(|| err(format!("unknown fallback pool {fb:?}")))?;
                    if idx == pool {
                        return Err(err("fallback pool is the name's own pool".into()));
                    }
                    WhenAllDown::Fallback(idx)
                }
                ("fallback", None) => {
                    return Err(err(
                        "when_all_down = \"fallback\" needs fallback = \"POOL\"".into(),
                    ))
                }
                (_, Some(_)) => {
                    return Err(err(
                        "fallback is only used with when_all_down = \"fallback\"".into(),
                    ))
                }
                (other, None) => {
                    return Err(err(format!(
                        "unknown when_all_down {other:?} (fail-open, fallback or nodata)"
                    )))
                }
            };
            // Zone-node rules: no static A/AAAA/CNAME for the types the binding answers.
            if let Some(node) = zone.node(&owner) {
                if node.lb.is_some() {
                    return Err(err("declared twice".into()));
                }
                for set in &node.rrsets {
                    let clash = set.rtype == RecordType::CNAME
                        || (set.rtype == RecordType::A && a)
                        || (set.rtype == RecordType::AAAA && aaaa);
                    if clash {
                        return Err(err(format!(
                            "clashes with the static {} record at {}:{}",
                            set.rtype,
                            zone.file.display(),
                            set.line()
                        )));
                    }
                }
            }
            // Not at or below a delegation.
            for k in zone.origin.num_labels() + 1..=owner.num_labels() {
                let anc = owner.trim_to(k as usize);
                if zone
                    .node(&anc)
                    .is_some_and(|nd| nd.rrset(RecordType::NS).is_some())
                {
                    return Err(err(format!("at or below the delegation {anc}")));
                }
            }
            let line = lines.line(n.span().start);
            zone.ensure_node(&owner);
            let binding = self.bindings.len();
            zone.node_mut(&owner).expect("ensured").lb = Some(LbMark { binding, a, aaaa });
            self.bindings.push(Binding {
                zone: zone_idx,
                name: owner,
                ttl,
                negative_ttl: ttl.min(zone_neg_ttl),
                policy,
                pool,
                answers: answers as usize,
                when_all_down,
                file: shared_file.clone(),
                line,
            });
        }
        Ok(())
    }
}

/// Builds a name's policy; geo policies are checked against the declared sites. A subnet file
/// it reads is added to `sources`.
fn build_policy(
    fname: &FileName,
    sites: &BTreeMap<String, Option<Coords>>,
    member_sites: &[&str],
    file: &Path,
    has_geo: bool,
    sources: &mut Vec<PathBuf>,
    interned: &mut HashMap<String, SiteName>,
) -> Result<PolicyKind, String> {
    let kind = fname.policy.as_deref().unwrap_or("weighted");
    let geo_keys = fname.limit.is_some()
        || fname.default_order.is_some()
        || fname.map.is_some()
        || fname.subnets.is_some()
        || fname.subnet_file.is_some();
    let simple = match kind {
        "weighted" => Some(PolicyKind::Weighted),
        "failover" => Some(PolicyKind::Failover),
        "all" => Some(PolicyKind::All),
        "geo-nearest" | "geo-map" | "subnet" | "latency" => None,
        other => {
            return Err(format!(
            "unknown policy {other:?} (weighted, failover, all, geo-nearest, geo-map, subnet or latency)"
        ))
        }
    };
    let latency = match (kind, &fname.explore) {
        ("latency", None) => Some(20),
        ("latency", Some(share)) => Some(
            share
                .trim()
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<f64>().ok())
                .filter(|v| (0.0..=50.0).contains(v))
                .map(|v| (v * 10.0).round() as u16)
                .ok_or_else(|| format!("explore {share:?} must be a percentage from 0% to 50%"))?,
        ),
        (_, Some(_)) => return Err(format!("explore applies to the latency policy, not {kind}")),
        (_, None) => None,
    };
    if let Some(p) = simple {
        if geo_keys {
            return Err(format!(
                    "limit, default_order, map, subnets and subnet_file apply to geo-nearest, geo-map and subnet, not {kind}"
                ));
        }
        return Ok(p);
    }
    let known = |site: &String| -> Result<(), String> {
        if sites.contains_key(site) {
            Ok(())
        } else {
            Err(format!(
                "unknown site {site:?} (declare it as [site.{site}])"
            ))
        }
    };
    for site in member_sites {
        known(&site.to_string()).map_err(|e| format!("{e}: a member of its pool is there"))?;
    }
    // Latency falls back to geography, or without a database to the default order.
    let nearest = kind == "geo-nearest" || (kind == "latency" && has_geo);
    if !matches!(kind, "subnet" | "latency") && !has_geo {
        return Err(format!("policy {kind:?} needs server.geo_database"));
    }
    let default_order = match &fname.default_order {
        Some(list) => {
            list.iter().try_for_each(known)?;
            list.clone()
        }
        // Unplaced clients get every site of the pool, in the order members list them.
        None => {
            let mut order: Vec<String> = Vec::new();
            for s in member_sites {
                if !order.iter().any(|o| o == s) {
                    order.push(s.to_string());
                }
            }
            order
        }
    };
    let mut subnets: Vec<(IpNet, Vec<String>)> = Vec::new();
    let mut add_subnet = |net: &str, list: Vec<String>, at: &str| -> Result<(), String> {
        let parsed = net
            .parse::<IpNet>()
            .map_err(|_| format!("{at}subnet {net:?} is not a network (CIDR)"))?;
        if parsed.trunc() != parsed {
            return Err(format!(
                "{at}subnet {net:?} has host bits set (did you mean {}?)",
                parsed.trunc()
            ));
        }
        if list.is_empty() {
            return Err(format!("{at}subnet {net:?} lists no site"));
        }
        list.iter()
            .try_for_each(known)
            .map_err(|e| format!("{at}{e}"))?;
        if subnets.iter().any(|(n, _)| *n == parsed) {
            return Err(format!("{at}subnet {net:?} is listed twice"));
        }
        subnets.push((parsed, list));
        Ok(())
    };
    for (net, list) in fname.subnets.clone().unwrap_or_default() {
        add_subnet(&net, list, "")?;
    }
    if let Some(f) = &fname.subnet_file {
        let path = file.parent().unwrap_or(Path::new(".")).join(f);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("subnet_file {}: {e}", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let net = words.next().unwrap_or_default();
            let list: Vec<String> = words
                .flat_map(|w| w.split(','))
                .filter(|w| !w.is_empty())
                .map(String::from)
                .collect();
            add_subnet(net, list, &format!("{}:{}: ", path.display(), i + 1))?;
        }
        sources.push(path);
    }
    subnets.sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
    let mode = match kind {
        _ if nearest => {
            if fname.map.is_some() {
                return Err(format!("map applies to geo-map, not {kind}"));
            }
            let limit = match fname.limit {
                None => None,
                Some(n) if n >= 1 => Some(n as usize),
                Some(_) => return Err("limit must be at least 1".into()),
            };
            let mut located = Vec::new();
            for site in member_sites {
                if located.iter().any(|(s, _): &(String, Coords)| s == site) {
                    continue;
                }
                match sites.get(*site) {
                    Some(Some(c)) => located.push((site.to_string(), *c)),
                    _ => return Err(format!("site {site:?} has no location, which {kind} needs")),
                }
            }
            GeoMode::Nearest {
                sites: located
                    .into_iter()
                    .map(|(s, c)| (intern(interned, &s), c.unit()))
                    .collect(),
                limit,
            }
        }
        "geo-map" => {
            if fname.limit.is_some() {
                return Err("limit applies to geo-nearest only".into());
            }
            let map = fname
                .map
                .clone()
                .ok_or("geo-map needs map = { \"EU\" = [\"fra\"], ... }")?;
            for (key, list) in &map {
                let parts: Vec<&str> = key.split('/').collect();
                if parts.len() > 3
                    || parts
                        .iter()
                        .any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric()))
                {
                    return Err(format!(
                            "map key {key:?} must be CONTINENT, CONTINENT/COUNTRY or CONTINENT/COUNTRY/SUBDIVISION"
                        ));
                }
                if list.is_empty() {
                    return Err(format!("map key {key:?} lists no site"));
                }
                list.iter().try_for_each(known)?;
            }
            GeoMode::Map(
                map.into_iter()
                    .map(|(k, v)| (k, names(interned, v)))
                    .collect(),
            )
        }
        _ => {
            if fname.limit.is_some() || fname.map.is_some() {
                return Err(format!(
                    "limit and map do not apply to the {kind} policy here"
                ));
            }
            if subnets.is_empty() && kind == "subnet" {
                return Err("the subnet policy needs subnets or subnet_file".into());
            }
            GeoMode::Subnet
        }
    };
    Ok(PolicyKind::Geo(Arc::new(GeoPolicy {
        mode,
        latency,
        subnets: subnets
            .into_iter()
            .map(|(n, v)| (n, names(interned, v)))
            .collect(),
        default_order: names(interned, default_order),
    })))
}

fn intern(table: &mut HashMap<String, SiteName>, site: &str) -> SiteName {
    table
        .entry(site.to_string())
        .or_insert_with(|| SiteName::from(site))
        .clone()
}

fn names(table: &mut HashMap<String, SiteName>, list: Vec<String>) -> Vec<SiteName> {
    list.into_iter().map(|s| intern(table, &s)).collect()
}

impl Builder {
    /// Rejects load-balanced names whose CNAME members lead, directly or through static
    /// CNAMEs, back to themselves.
    pub(super) fn check_alias_loops(&self) -> Result<(), ConfigError> {
        // Where an alias lands: the binding at the end of its static CNAME chain, if any.
        let lands_on = |target: &str| -> Option<usize> {
            let mut name = Name::from_ascii(target).ok()?;
            for _ in 0..=8 {
                let zone = self
                    .zones
                    .iter()
                    .filter(|z| z.origin.zone_of(&name))
                    .max_by_key(|z| z.origin.num_labels())?;
                let node = zone.node(&name)?;
                if let Some(lb) = node.lb {
                    return Some(lb.binding);
                }
                let cname = node.rrset(RecordType::CNAME)?;
                match cname.first() {
                    hickory_proto::rr::RData::CNAME(c) => name = fqdn_lower(&c.0),
                    _ => return None,
                }
            }
            None
        };
        let edges: Vec<Vec<usize>> = self
            .bindings
            .iter()
            .map(|b| {
                let mut pools = vec![b.pool];
                if let WhenAllDown::Fallback(p) = b.when_all_down {
                    pools.push(p);
                }
                pools
                    .into_iter()
                    .flat_map(|p| self.pools[p].members.iter())
                    .filter_map(|m| match &m.target {
                        Target::Alias(t) => lands_on(t),
                        Target::Addr(_) => None,
                    })
                    .collect()
            })
            .collect();
        for start in 0..self.bindings.len() {
            if edges[start].is_empty() {
                continue;
            }
            // Depth-first walk from each name, remembering the path.
            let mut stack = vec![(start, vec![start])];
            let mut seen = vec![false; self.bindings.len()];
            while let Some((at, path)) = stack.pop() {
                for &next in &edges[at] {
                    if next == start {
                        let b = &self.bindings[start];
                        let chain: Vec<String> = path
                            .iter()
                            .chain(std::iter::once(&start))
                            .map(|&i| self.bindings[i].name.to_string())
                            .collect();
                        return Err(ConfigError::Invalid {
                            file: b.file.to_path_buf(),
                            line: b.line,
                            object: Object::Name(b.name.to_string()),
                            message: format!("CNAME members loop: {}", chain.join(" -> ")),
                        });
                    }
                    if !seen[next] {
                        seen[next] = true;
                        let mut p = path.clone();
                        p.push(next);
                        stack.push((next, p));
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn finish(self, server: ServerSettings) -> Result<Config, ConfigError> {
        self.check_alias_loops()?;
        let Builder {
            zones,
            zone_ecs,
            zone_keys,
            zone_transfer,
            keys,
            geo,
            geo_path,
            bindings,
            pools,
            mut probes,
            probe_order,
            steering,
            sources,
            mut warnings,
        } = self;
        warnings.extend(
            zones
                .iter()
                .flat_map(|z| z.warnings.iter().map(ToString::to_string)),
        );
        Ok(Config {
            server,
            zones: zones
                .into_iter()
                .zip(zone_ecs)
                .zip(zone_keys)
                .zip(zone_transfer)
                .map(|(((zone, ecs), (keys, signing)), transfer)| ServedZone {
                    data: Arc::new(zone),
                    ecs,
                    transfer,
                    dnssec_keys: keys,
                    signing,
                })
                .collect(),
            keys,
            geo: match geo {
                Some(g) => g,
                None => Arc::new(NoGeo),
            },
            geo_path,
            bindings,
            pools,
            probes: probe_order
                .into_iter()
                .map(|s| {
                    let members = probes.remove(&s).unwrap_or_default();
                    (s, members)
                })
                .collect(),
            steering,
            sources,
            warnings,
        })
    }
}

/// A site's `shed` table: a known signal and `low < high` (percentages for healthy servers).
fn shed_rule(shed: &FileShed) -> Result<ShedRule, String> {
    let signal = Signal::from_name(&shed.signal).ok_or_else(|| {
        format!(
            "shed signal {:?} is not one of connections, requests, healthy-servers",
            shed.signal
        )
    })?;
    let (low, high) = (shed.low, shed.high);
    if !(low.is_finite() && high.is_finite() && 0.0 <= low && low < high) {
        return Err(format!(
            "shed watermarks need 0 <= low < high (low {low}, high {high})"
        ));
    }
    if signal == Signal::HealthyServers && high > 100.0 {
        return Err(format!(
            "shed watermarks on healthy-servers are percentages, at most 100 (high {high})"
        ));
    }
    Ok(ShedRule { signal, low, high })
}

/// A site's `passive` table: at least one threshold; `action` down (default) or degrade, to
/// `degrade_to` (default 25%).
fn passive_rule(p: &FilePassive) -> Result<PassiveRule, String> {
    let percent = |key: &str, text: &str| -> Result<f64, String> {
        text.trim()
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<f64>().ok())
            .filter(|v| (0.0..=100.0).contains(v))
            .map(|v| v / 100.0)
            .ok_or_else(|| format!("passive {key} {text:?} must be a percentage like \"5%\""))
    };
    let max_error_rate = match &p.errors_above {
        Some(t) => Some(percent("errors_above", t)?),
        None => None,
    };
    let max_p99_ms = match &p.p99_above {
        Some(d) => Some(
            d.get()
                .map_err(|m| format!("passive p99_above: {m}"))?
                .as_secs_f64()
                * 1000.0,
        ),
        None => None,
    };
    if max_error_rate.is_none() && max_p99_ms.is_none() {
        return Err("passive needs errors_above, p99_above or both".into());
    }
    let action = match p.action.as_deref() {
        None | Some("down") if p.degrade_to.is_none() => PassiveAction::Down,
        None | Some("degrade") => PassiveAction::Degrade(Factor::of(percent(
            "degrade_to",
            p.degrade_to.as_deref().unwrap_or("25%"),
        )?)),
        Some("down") => return Err("passive degrade_to goes with action = \"degrade\"".into()),
        Some(other) => {
            return Err(format!(
                "passive action {other:?} is not one of down, degrade"
            ))
        }
    };
    Ok(PassiveRule {
        max_error_rate,
        max_p99_ms,
        min_requests: f64::from(p.min_requests.unwrap_or(20)),
        reports: p.reports.unwrap_or(3).max(1),
        // The check's, filled in for each member.
        rise: 1,
        action,
    })
}

/// What a member's probe checks: its `probe` address, else its address at the check's port,
/// else at its own port.
fn probe_spec(
    kind: ProbeKind,
    c: &Timing,
    m: &FileMember,
    target: &Target,
    member_port: Option<u16>,
) -> Result<ProbeSpec, String> {
    let addr = match (&m.probe, target, c.port.or(member_port)) {
        (Some(p), _, _) => p
            .parse::<SocketAddr>()
            .or_else(|_| {
                p.parse::<IpAddr>()
                    .map_err(|_| ())
                    .and_then(|ip| c.port.map(|port| SocketAddr::new(ip, port)).ok_or(()))
            })
            .map_err(|_| {
                format!("probe {p:?} must be ADDRESS:PORT (or an address when the check sets port)")
            })?,
        (None, Target::Addr(ip), Some(port)) => SocketAddr::new(*ip, port),
        (None, Target::Addr(_), None) => {
            return Err(
                "no probe address: set probe = \"ADDRESS:PORT\", the check's port, or the member's port"
                    .into(),
            )
        }
        (None, Target::Alias(_), _) => {
            return Err("a cname member needs probe = \"ADDRESS:PORT\"".into())
        }
    };
    Ok(ProbeSpec {
        kind,
        addr,
        interval: c.interval,
        timeout: c.timeout,
        rise: c.rise,
        fall: c.fall,
        jitter_percent: c.jitter_percent,
    })
}
