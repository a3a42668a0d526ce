#!/usr/bin/python3
# -*- coding: utf-8 -*-
"""Write the fleet's status report on the laptop: HTML, JUnit and JSON."""

from __future__ import annotations

DOCUMENTATION = r"""
module: flypack_fleet_report
short_description: Write the fleet's status report (HTML, JUnit, JSON) from what each unit said
description:
  - Every unit's `firstboot status --json` output, last QA report
    (base64, as slurp returns it) and its vmalert's alerts (firing and
    pending, as GET /api/v1/alerts returns them) are parsed here, on the
    laptop, as data:
    nothing a unit sends is templated or trusted. A unit that did not
    answer, or whose answer does not parse, is a failed unit in the report.
  - Writes fleet-status.html, fleet-status.xml (JUnit: one test suite per
    unit, one test case for its verdict and one per QA check) and
    fleet-status.json into dest, each under a temporary name, renamed when
    complete. A firing alert fails the unit's "alerts" test case in the
    JUnit; it does not change the unit's verdict.
  - Fails, after writing, when a unit is not GO (GO-WITH-WARNINGS counts as
    GO) and fail_unless_go is true.
options:
  dest: {description: Folder for the report (made if missing)., required: true, type: path}
  units:
    description: One entry per unit (host, flypack, role, reachable, msg, status_rc, status, qa, alerts_status, alerts_msg, alerts).
    required: true
    type: list
    elements: dict
  fail_unless_go: {description: Fail when a unit is not GO., type: bool, default: true}
"""

import base64
import html
import json
import os
import re
import tempfile
import xml.etree.ElementTree as ET

from ansible.module_utils.basic import AnsibleModule

VERDICTS = ("GO", "GO-WITH-WARNINGS", "NO-GO")
OUTCOMES = ("pass", "fail", "waived", "skip")
# What a unit may send: bounded, so one unit cannot fill the laptop's report.
MAX_TEXT = 4096
MAX_CHECKS = 500
MAX_ALERTS = 100
# XML 1.0 has no place for these; a unit's text may hold them.
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def text(v, limit=MAX_TEXT):
    """A unit's value as bounded, printable text."""
    if v is None:
        return ""
    if not isinstance(v, str):
        v = json.dumps(v)
    v = CONTROL.sub("\ufffd", v)
    return v if len(v) <= limit else v[:limit] + " [cut]"


def parse_unit(u):
    """What one unit said, checked: a dict with verdict, reasons, checks, problem."""
    out = {
        "host": text(u.get("host"), 255),
        "flypack": text(u.get("flypack"), 255),
        "role": text(u.get("role"), 255),
        "verdict": "UNKNOWN",
        "reasons": [],
        "checks": [],
        "problem": "",
        "firstboot_version": "",
        "status_time": "",
        "alerts": [],
        "alerts_left_off": 0,
        "alerts_problem": "",
    }
    if u.get("reachable") not in (True, "True", "true"):
        out["verdict"] = "UNREACHABLE"
        out["problem"] = "not reached: " + text(u.get("msg")) + " (is it powered, cabled, and is SSH open to this laptop?)"
        return out
    parse_alerts(u, out)
    try:
        rc = int(u.get("status_rc"))
    except (TypeError, ValueError):
        rc = None
    try:
        # Ansible may hand over JSON text already parsed.
        st = u.get("status")
        st = st if isinstance(st, dict) else json.loads(st or "")
        if not isinstance(st, dict):
            raise ValueError("not an object")
    except ValueError as e:
        out["problem"] = "firstboot status --json gave no status (exit %s): %s; stderr: %s" % (
            text(rc, 20), text(str(e), 200), text(u.get("stderr"), 500))
        return out
    verdict = st.get("verdict")
    if verdict not in VERDICTS:
        out["problem"] = "unknown verdict %r" % text(verdict, 100)
        return out
    # The exit code is the verdict too (0 GO, 1 NO-GO, 2 with warnings).
    expected = {"GO": 0, "NO-GO": 1, "GO-WITH-WARNINGS": 2}[verdict]
    if rc != expected:
        out["problem"] = "firstboot status said %s but exited %s" % (verdict, text(rc, 20))
        return out
    out["verdict"] = verdict
    reported = st.get("hostname")
    if reported != u.get("host"):
        out["reasons"].append("the unit calls itself %r" % text(reported, 255))
    out["reasons"] += [text(r) for r in (st.get("reasons") or [])[:50] if isinstance(r, str)]
    out["firstboot_version"] = text(st.get("version"), 100)
    out["status_time"] = text(st.get("time"), 100)
    if u.get("qa"):
        try:
            qa = json.loads(base64.b64decode(u["qa"], validate=True))
            checks = qa.get("checks") if isinstance(qa, dict) else None
            if not isinstance(checks, list):
                raise ValueError("no checks")
            for c in checks[:MAX_CHECKS]:
                if not isinstance(c, dict):
                    continue
                outcome = c.get("outcome") if c.get("outcome") in OUTCOMES else "unknown"
                out["checks"].append({
                    "id": text(c.get("id"), 200),
                    "title": text(c.get("title"), 500),
                    "severity": text(c.get("severity"), 50),
                    "outcome": outcome,
                    "evidence": text(c.get("evidence")),
                    "fix": text(c.get("fix")),
                })
        except (ValueError, TypeError) as e:
            out["problem"] = "its QA report does not parse: " + text(str(e), 200)
    else:
        out["problem"] = "no QA report yet"
    return out


def parse_alerts(u, out):
    """The unit's firing and pending alerts (vmalert's GET /api/v1/alerts), bounded."""
    try:
        code = int(u.get("alerts_status"))
    except (TypeError, ValueError):
        code = None
    if code != 200:
        out["alerts_problem"] = (
            "alerts unknown: the unit's vmalert did not answer (HTTP %s%s): is its stack up? "
            "Run the stack.yml playbook on it, or `firstboot stack up`" % (
                text(code, 20), ", " + text(u.get("alerts_msg"), 300) if u.get("alerts_msg") else ""))
        return
    try:
        body = u.get("alerts")
        body = body if isinstance(body, dict) else json.loads(body or "")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise ValueError("no data")
        # vmalert 1.79 answers null, not [], when nothing is firing or pending.
        alerts = data.get("alerts") or []
        if not isinstance(alerts, list):
            raise ValueError("alerts is not a list")
    except (ValueError, TypeError) as e:
        out["alerts_problem"] = "alerts unknown: the unit's vmalert answer does not parse: " + text(str(e), 200)
        return
    parsed = []
    for a in alerts:
        if not isinstance(a, dict):
            continue
        labels = a.get("labels") if isinstance(a.get("labels"), dict) else {}
        notes = a.get("annotations") if isinstance(a.get("annotations"), dict) else {}
        parsed.append({
            "name": text(a.get("name"), 200),
            "state": "firing" if a.get("state") == "firing" else "pending",
            "severity": text(labels.get("severity"), 50),
            "summary": text(notes.get("summary"), 500),
            "since": text(a.get("activeAt"), 50),
        })
    # Firing first, critical first, then by name.
    parsed.sort(key=lambda a: (a["state"] != "firing", a["severity"] != "critical", a["name"]))
    out["alerts"] = parsed[:MAX_ALERTS]
    out["alerts_left_off"] = max(0, len(parsed) - MAX_ALERTS)


def firing(u):
    return [a for a in u["alerts"] if a["state"] == "firing"]


def fine(u):
    return u["verdict"] in ("GO", "GO-WITH-WARNINGS") and not u["problem"]


def render_html(units):
    e = html.escape
    rows = []
    for u in units:
        failed = [c for c in u["checks"] if c["outcome"] == "fail"]
        details = "".join(
            "<li><b>%s</b> (%s): %s. Fix: %s</li>" % (e(c["id"]), e(c["severity"]), e(c["evidence"]), e(c["fix"]))
            for c in failed)
        details += "".join("<li>%s</li>" % e(r) for r in u["reasons"])
        if u["problem"]:
            details += "<li>%s</li>" % e(u["problem"])
        alerts = "".join(
            "<li>%s, %s: <b>%s</b>: %s (since %s)</li>" % (
                e(a["state"]), e(a["severity"] or "no severity"), e(a["name"]), e(a["summary"]), e(a["since"]))
            for a in u["alerts"])
        if u["alerts_left_off"]:
            alerts += "<li>and %d more</li>" % u["alerts_left_off"]
        if u["alerts_problem"]:
            alerts += "<li>%s</li>" % e(u["alerts_problem"])
        if u["verdict"] != "UNREACHABLE" and not alerts:
            alerts = "<li>none</li>"
        rows.append(
            '<tr class="%s"><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%d/%d</td><td><ul>%s</ul></td>'
            '<td><ul>%s</ul></td></tr>' % (
                "ok" if fine(u) else "bad", e(u["flypack"]), e(u["host"]), e(u["role"]), e(u["verdict"]),
                sum(c["outcome"] == "pass" for c in u["checks"]), len(u["checks"]), details, alerts))
    go = sum(fine(u) for u in units)
    alerting = sum(bool(firing(u)) for u in units)
    return (
        HEAD
        + "<h1>Fleet status: %d of %d units GO</h1>\n" % (go, len(units))
        + "<p>%d unit(s) with a firing alert.</p>\n" % alerting
        + "<table><thead><tr><th>flypack</th><th>unit</th><th>role</th><th>verdict</th>"
        + "<th>QA passed</th><th>why</th><th>alerts</th></tr></thead><tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table>\n</body></html>\n"
    )


HEAD = (
    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
    "<title>Fleet status</title><style>"
    "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;width:100%}"
    "td,th{border:1px solid #999;padding:.3em;text-align:left;vertical-align:top}"
    "tr.ok td:nth-child(4){background:#cfc}tr.bad td:nth-child(4){background:#fcc}"
    "</style></head><body>\n"
)


def render_junit(units):
    suites = ET.Element("testsuites", name="fleet-status")
    for u in units:
        s = ET.SubElement(suites, "testsuite", name=u["host"])
        props = ET.SubElement(s, "properties")
        for k in ("flypack", "role", "firstboot_version", "status_time"):
            ET.SubElement(props, "property", name=k, value=u[k])
        cases = 0
        failures = 0
        skipped = 0
        case = ET.SubElement(s, "testcase", name="verdict", classname=u["flypack"] + "." + u["host"])
        cases += 1
        if not fine(u):
            failures += 1
            f = ET.SubElement(case, "failure", message=u["verdict"], type="verdict")
            f.text = "\n".join(u["reasons"] + ([u["problem"]] if u["problem"] else []))
        for c in u["checks"]:
            case = ET.SubElement(s, "testcase", name=c["id"], classname=u["flypack"] + "." + u["host"])
            cases += 1
            if c["outcome"] == "fail":
                failures += 1
                f = ET.SubElement(case, "failure", message=c["evidence"], type=c["severity"])
                f.text = "fix: " + c["fix"]
            elif c["outcome"] in ("skip", "waived", "unknown"):
                skipped += 1
                ET.SubElement(case, "skipped", message=c["outcome"] + ": " + c["evidence"])
        if u["verdict"] != "UNREACHABLE":
            case = ET.SubElement(s, "testcase", name="alerts", classname=u["flypack"] + "." + u["host"])
            cases += 1
            now = firing(u)
            if now:
                failures += 1
                f = ET.SubElement(case, "failure", message="%d alert(s) firing" % len(now), type="alerts")
                f.text = "\n".join("%s (%s): %s" % (a["name"], a["severity"], a["summary"]) for a in now)
            elif u["alerts_problem"]:
                skipped += 1
                ET.SubElement(case, "skipped", message=u["alerts_problem"])
        s.set("tests", str(cases))
        s.set("failures", str(failures))
        s.set("skipped", str(skipped))
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def write(dest, name, data):
    """Writes dest/name through a temporary file; returns whether it changed."""
    path = os.path.join(dest, name)
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == data:
                return False
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(dir=dest, prefix="." + name + ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return True


def main():
    m = AnsibleModule(
        argument_spec=dict(
            dest=dict(type="path", required=True),
            units=dict(type="list", elements="dict", required=True),
            fail_unless_go=dict(type="bool", default=True),
        ),
        supports_check_mode=False,
    )
    dest = m.params["dest"]
    units = sorted((parse_unit(u) for u in m.params["units"]), key=lambda u: (u["flypack"], u["host"]))
    os.makedirs(dest, exist_ok=True)
    changed = False
    changed |= write(dest, "fleet-status.html", render_html(units))
    changed |= write(dest, "fleet-status.xml", render_junit(units))
    changed |= write(dest, "fleet-status.json", json.dumps({"units": units}, indent=1) + "\n")
    bad = [u for u in units if not fine(u)]
    summary = ["%s: %s%s" % (u["host"], u["verdict"], " (" + u["problem"] + ")" if u["problem"] else "") for u in units]
    result = dict(changed=changed, units=summary, report=os.path.join(dest, "fleet-status.html"))
    if bad and m.params["fail_unless_go"]:
        m.fail_json(msg="%d of %d units are not GO: %s; the report: %s" % (
            len(bad), len(units), "; ".join(s for s, u in zip(summary, units) if not fine(u)), result["report"]), **result)
    m.exit_json(**result)


if __name__ == "__main__":
    main()
