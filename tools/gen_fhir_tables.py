#!/usr/bin/env python3
"""Generate Vigil's compact FHIR R4 tables from the official 4.0.1 definitions.

Usage: python3 tools/gen_fhir_tables.py [DEFINITIONS_DIR]
DEFINITIONS_DIR defaults to ../shared/fhir-r4 (profiles-types.json, profiles-resources.json,
valuesets.json, search-parameters.json). Output goes to crates/fhir-model/data/ and is committed,
so building Vigil never needs the definitions.

What is kept, and why:
- model.json: every type's elements (path, cardinality, types, reference targets, content
  references, required bindings, own invariants, summary/modifier flags) — what FHIRPath,
  validation and `_summary` need; prose is dropped.
- valuesets.json: expansions of the value sets that required bindings use, where the
  definitions allow a complete expansion (enumerated concepts, whole local code systems,
  is-a filters); value sets that cannot be expanded are left out and are not checked.
- search-parameters.json: all search parameters (code, url, base, type, expression,
  target, components).
- compartment-patient.json: for each resource type in the Patient compartment, the search
  parameters that link it to the patient (from compartmentdefinition-patient.json).
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "shared", "fhir-r4")
OUT = os.path.join(ROOT, "crates", "fhir-model", "data")

FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"


def load(name):
    with open(os.path.join(SRC, name), encoding="utf-8") as f:
        return json.load(f)


def strip_version(url):
    return url.split("|")[0] if url else url


def type_code(t):
    code = t["code"]
    if code.startswith("http://hl7.org/fhirpath/System."):
        for ext in t.get("extension", []):
            if ext.get("url") == FHIR_TYPE_EXT:
                return ext.get("valueUrl") or ext.get("valueUri")
        return "System." + code.rsplit(".", 1)[1]
    return code


def own_constraints(el, sd_url):
    out = []
    for c in el.get("constraint", []):
        src = c.get("source")
        if src and src != sd_url:
            continue  # inherited: applied through the base type instead
        if not c.get("expression"):
            continue
        out.append([c["key"], c.get("severity", "error"), c.get("human", ""), c["expression"]])
    return out


def convert_sd(sd):
    name = sd["type"] if sd["kind"] != "logical" else sd["id"]
    url = sd["url"]
    elements = sd["snapshot"]["element"]
    root = elements[0]
    out = {
        "name": name,
        "kind": sd["kind"],
        "abstract": sd.get("abstract", False),
        "base": sd.get("baseDefinition", "").replace(SD_PREFIX, "") or None,
        "constraints": own_constraints(root, url),
        "elements": [],
    }
    for el in elements[1:]:
        path = el["path"]
        rel = path[len(root["path"]) + 1:]
        if sd["kind"] == "primitive-type" and rel == "value":
            t = el["type"][0]
            out["system"] = t["code"].rsplit(".", 1)[1]
            for ext in t.get("extension", []):
                if ext.get("url") == REGEX_EXT:
                    out["regex"] = ext["valueString"]
            continue
        e = {"path": rel, "min": el.get("min", 0), "max": el.get("max", "*")}
        types = []
        for t in el.get("type", []):
            entry = {"code": type_code(t)}
            targets = [p.replace(SD_PREFIX, "") for p in t.get("targetProfile", [])]
            if targets:
                entry["targets"] = targets
            types.append(entry)
        if types:
            e["types"] = types
        if "contentReference" in el:
            e["contentReference"] = el["contentReference"].lstrip("#")
        b = el.get("binding")
        if b and b.get("strength") == "required" and b.get("valueSet"):
            e["binding"] = strip_version(b["valueSet"])
        cs = own_constraints(el, url)
        if cs:
            e["constraints"] = cs
        if el.get("isSummary"):
            e["summary"] = True
        if el.get("isModifier"):
            e["modifier"] = True
        out["elements"].append(e)
    return out


def gen_model():
    types = {}
    for bundle in ("profiles-types.json", "profiles-resources.json"):
        for entry in load(bundle)["entry"]:
            sd = entry["resource"]
            if sd.get("resourceType") != "StructureDefinition":
                continue
            if sd.get("derivation") == "constraint":
                continue  # profiles (e.g. vitalsigns) are not base types
            if sd["kind"] == "logical":
                continue
            t = convert_sd(sd)
            types[t["name"]] = t
    return {"fhirVersion": "4.0.1", "types": types}


def flatten_concepts(concepts, parent=None, out=None):
    if out is None:
        out = []
    for c in concepts or []:
        out.append((c["code"], parent))
        flatten_concepts(c.get("concept"), c["code"], out)
    return out


def gen_valuesets(model):
    resources = [e["resource"] for e in load("valuesets.json")["entry"]]
    codesystems = {r["url"]: r for r in resources if r["resourceType"] == "CodeSystem"}
    valuesets = {r["url"]: r for r in resources if r["resourceType"] == "ValueSet"}
    bound = set()
    for t in model["types"].values():
        for e in t["elements"]:
            if "binding" in e:
                bound.add(e["binding"])

    def cs_codes(system, filters):
        cs = codesystems.get(system)
        if cs is None or cs.get("content") not in ("complete", None):
            return None
        flat = flatten_concepts(cs.get("concept"))
        if not filters:
            return [c for c, _ in flat]
        codes = None
        for f in filters:
            if f.get("op") not in ("is-a", "descendent-of") or f.get("property") != "concept":
                return None
            root = f["value"]
            children = {}
            for c, p in flat:
                children.setdefault(p, []).append(c)
            picked = [root] if f["op"] == "is-a" else []
            stack = list(children.get(root, []))
            while stack:
                c = stack.pop()
                picked.append(c)
                stack.extend(children.get(c, []))
            codes = picked if codes is None else [c for c in codes if c in picked]
        return codes

    cache = {}

    def expand(url, depth=0):
        if url in cache:
            return cache[url]
        if depth > 10:
            return None
        vs = valuesets.get(url)
        if vs is None or "compose" not in vs:
            cache[url] = None
            return None
        result = {}

        def include_part(inc):
            part = {}
            if inc.get("valueSet"):
                for sub in inc["valueSet"]:
                    ex = expand(strip_version(sub), depth + 1)
                    if ex is None:
                        return None
                    for s, cs in ex.items():
                        part.setdefault(s, set()).update(cs)
                if not inc.get("system"):
                    return part
            system = inc.get("system")
            if not system:
                return None
            if inc.get("concept"):
                codes = [c["code"] for c in inc["concept"]]
            else:
                codes = cs_codes(system, inc.get("filter"))
                if codes is None:
                    return None
            if inc.get("valueSet"):
                part = {system: part.get(system, set()) & set(codes)}
            else:
                part.setdefault(system, set()).update(codes)
            return part

        for inc in vs["compose"].get("include", []):
            part = include_part(inc)
            if part is None:
                cache[url] = None
                return None
            for s, cs in part.items():
                result.setdefault(s, set()).update(cs)
        for exc in vs["compose"].get("exclude", []):
            part = include_part(exc)
            if part is None:
                cache[url] = None
                return None
            for s, cs in part.items():
                if s in result:
                    result[s] -= cs
        cache[url] = result
        return result

    out = {}
    for url in sorted(bound):
        ex = expand(url)
        if ex is not None:
            out[url] = {s: sorted(cs) for s, cs in sorted(ex.items())}
    return out, sorted(u for u in bound if u not in out)


def gen_search_params():
    out = []
    for entry in load("search-parameters.json")["entry"]:
        sp = entry["resource"]
        p = {
            "url": sp["url"],
            "code": sp["code"],
            "base": sp["base"],
            "type": sp["type"],
        }
        if sp.get("expression"):
            p["expression"] = sp["expression"]
        if sp.get("target"):
            p["target"] = sp["target"]
        if sp.get("component"):
            p["component"] = [
                {"definition": c["definition"], "expression": c["expression"]} for c in sp["component"]
            ]
        out.append(p)
    return out


def gen_patient_compartment():
    cd = load("compartmentdefinition-patient.json")
    return {r["code"]: r["param"] for r in cd["resource"] if r.get("param")}


def write(name, data):
    path = os.path.join(OUT, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"), sort_keys=False, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path) // 1024} KiB)")


def main():
    os.makedirs(OUT, exist_ok=True)
    model = gen_model()
    write("model.json", model)
    valuesets, unexpanded = gen_valuesets(model)
    write("valuesets.json", valuesets)
    print(f"{len(valuesets)} required value sets expanded, {len(unexpanded)} not expandable (not checked)")
    params = gen_search_params()
    write("search-parameters.json", params)
    print(f"{len(model['types'])} types, {len(params)} search parameters")
    compartment = gen_patient_compartment()
    write("compartment-patient.json", compartment)
    print(f"{len(compartment)} resource types in the Patient compartment")


if __name__ == "__main__":
    main()
