"""A verdict that finds a conformant signature moves the exchange-rate figures at once."""

from __future__ import annotations

import pytest
from sqlmodel import select

from tests.conftest import Clients, Env
from tests.stats.helpers import send

SENDER = "clerk.minhlang"
RECEIVER = "clerk.vuthu"


@pytest.mark.parametrize("conformant", [True, False])
def test_conformant_verdict_updates_signed_counts(env: Env, as_user: Clients,
                                                  conformant: bool) -> None:
    from eoffice.db import new_session
    from eoffice.models import Delivery, Document, StatsItem
    from eoffice.verification.service import CheckPlan, store_check

    sent = send(as_user.client, as_user.headers(SENDER), [env.user(RECEIVER)["agency_code"]])
    document_id = sent["document_id"]
    with new_session() as session:
        document = session.get(Document, document_id)
        assert document is not None and document.file_sha256
        delivery_ids = [d.id for d in session.exec(
            select(Delivery).where(Delivery.document_id == document_id)).all()]
        plan = CheckPlan(blob_sha256=document.file_sha256, file_name="a.pdf",
                         trust_state="t", roots_der=[], revocation="off", decree30=True,
                         purpose="arrival", document_id=document_id,
                         delivery_ids=[i for i in delivery_ids if i is not None])
        report = {"indication": "TOTAL_PASSED",
                  "decree30": {"conformant": conformant, "reasons": []}}
        store_check(session, plan, report)
        session.commit()  # tasks run eagerly: the stats update follows the commit
    with new_session() as session:
        doc_item = session.get(StatsItem, ("doc", document_id))
        delivery_item = session.get(StatsItem, ("dlv", delivery_ids[0]))
    assert doc_item is not None and delivery_item is not None
    assert doc_item.signed_ok == int(conformant)
    assert delivery_item.signed_ok == int(conformant)
