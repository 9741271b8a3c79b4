"""The campaign store: the source of truth for campaigns, rounds, candidates, oracle jobs and results.

SQLite file by default, PostgreSQL by URL. ``Store.open(url)`` connects (a clear
:class:`StoreError` naming the URL without its password when it cannot); ``open_campaign(config)``
opens the config's store and creates or resumes its campaign with provenance. Writes are idempotent
(keyed by campaign and candidate id) and every method is one transaction; see ``repository.py``.
"""

from orchestration.store.models import (
    ROUND_STATES,
    CampaignRecord,
    CampaignStatus,
    ModelKind,
    ModelRecord,
    ResultRecord,
    ResultStatus,
    RoundRecord,
    RoundState,
    StoreError,
)
from orchestration.store.repository import Store, code_version, open_campaign, safe_url
from orchestration.store.submissions import SubmissionRecord

__all__ = [
    "ROUND_STATES", "CampaignRecord", "CampaignStatus", "ModelKind", "ModelRecord", "ResultRecord", "ResultStatus",
    "RoundRecord", "RoundState", "Store", "StoreError", "SubmissionRecord", "code_version", "open_campaign", "safe_url",
]
