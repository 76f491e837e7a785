"""Which Label Studio project learns which domain, recorded when the project is first set up and kept beside the
store's files (`label-studio-projects.json` in the store folder), so a project cannot overwrite another's module.

    projects = ProjectDomains(store)
    projects.claim(project, learned=samcl.domains)     # 409 when the name is another project's, or learned elsewhere
    projects.domain_of(3)                              # "Polyps_Kvasir" (None: not set up yet)

A project's domain is its `extra_params` "domain", else its title made a name ("Polyps (Kvasir)" and
"Polyps [Kvasir]" both make "Polyps_Kvasir"). The first project to claim a name keeps it; a second project whose
name collides, or a name that is already a domain of the store learned elsewhere (by `samcl learn`, another
server), is refused with the reason unless its extra_params say `"replace": true`. Once recorded, a project's
domain changes only by its own extra_params with `"replace": true`: a webhook's `title` never re-points it.
The file is written atomically (the store's own files are untouched); a store folder that cannot be written keeps
the record in memory for this process, with a warning in the log.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from ... import SamclError
from ...io import atomic_write_json, quote, read_json_file
from ..errors import ApiError
from .settings import ProjectSettings

log = logging.getLogger("samcl.serve")
FILE = "label-studio-projects.json"
MAX_FILE_BYTES = 16 << 20


class ProjectDomains:
    def __init__(self, store: Path):
        self.path = Path(store) / FILE
        self._lock = threading.Lock()
        self.records = self._read()

    def _read(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        try:
            data = read_json_file(self.path, MAX_FILE_BYTES, "Label Studio project record")
        except SamclError as exc:
            raise SamclError(f"{exc} (remove it to forget which project learns which domain)") from None
        projects = data.get("projects") if isinstance(data, dict) else None
        if not isinstance(projects, dict) or not all(isinstance(v, dict) and isinstance(v.get("domain"), str)
                                                     for v in projects.values()):
            raise SamclError(f"{self.path}: not a Label Studio project record (remove it to start a new one)")
        return projects

    def domain_of(self, project: int) -> str | None:
        record = self.records.get(str(project))
        return record["domain"] if record else None

    def owner(self, domain: str) -> int | None:
        return next((int(k) for k, v in self.records.items() if v["domain"] == domain), None)

    def claim(self, project: ProjectSettings, learned: list[str]) -> str:
        """Record `project`'s domain (ApiError 409 `domain_taken` / `project_domain_fixed` when it may not have
        it); returns the domain. Sets `project.fixed`."""
        with self._lock:
            number, wanted = project.project, project.wanted_domain
            recorded = self.domain_of(number)
            if recorded == wanted or (recorded is not None and project.domain is None):
                project.fixed = recorded  # a title that changed (or a webhook's) does not move a project
                return recorded
            if recorded is not None and not project.replace:
                raise ApiError(409, "project_domain_fixed", f"project {number} learns the domain {quote(recorded)} "
                                                            f"(recorded when it was set up); to learn it as "
                                                            f"{quote(wanted)} instead add \"replace\": true to "
                                                            "its extra_params")
            owner = self.owner(wanted)
            if owner is not None and owner != number and not project.replace:
                raise ApiError(409, "domain_taken", f"domain {quote(wanted)} is project {owner}'s; give project "
                                                    f"{number} its own name in extra_params (\"domain\": ...), or "
                                                    "\"replace\": true to take it over")
            if owner is None and wanted in learned and not project.replace:
                raise ApiError(409, "domain_taken", f"domain {quote(wanted)} is in the store already, learned "
                                                    f"outside Label Studio; give project {number} its own name in "
                                                    "extra_params (\"domain\": ...), or \"replace\": true to "
                                                    "relearn it from this project")
            records = {k: v for k, v in self.records.items() if v["domain"] != wanted}
            records[str(number)] = {"domain": wanted, "since": round(time.time(), 3)}
            self.records = records
            self._write()
            project.fixed = wanted
            log.info("Label Studio project %s learns the domain %r", number, wanted)
            return wanted

    def _write(self) -> None:
        try:
            atomic_write_json(self.path, {"format": "samcl-label-studio-projects", "projects": self.records})
        except (OSError, SamclError) as exc:
            log.warning("cannot record Label Studio projects in %s (%s): kept in memory only", self.path, exc)
