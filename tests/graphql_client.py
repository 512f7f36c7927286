"""A small GraphQL-over-HTTP caller for the tests, on httpx, and the documents they send
(values always in variables, as the README recommends)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Caller:
    client: httpx.AsyncClient
    url: str
    key: str | None

    async def raw(self, query: str, variables: dict[str, Any] | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        return await self.client.post(
            self.url, json={"query": query, "variables": variables or {}}, headers=headers
        )

    async def __call__(self, query: str, **variables: Any) -> dict[str, Any]:
        response = await self.raw(query, variables)
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]


CREATE_APPLICATION = """
mutation($input: CreateApplicationInput!) {
  createApplication(input: $input) { application { id name } errors { code message } }
}"""
CREATE_API_KEY = """
mutation($input: CreateApiKeyInput!) {
  createApiKey(input: $input) { apiKey { id keyId role } secret errors { code message } }
}"""
REVOKE_API_KEY = """
mutation($id: ID!) { revokeApiKey(id: $id) { apiKey { revokedAt } errors { code message } } }"""
PURCHASE = """
mutation($input: PurchaseCreditsInput!) {
  purchaseCredits(input: $input) {
    pool { key purchased remaining unallocated } pack { id credits expiresAt } replayed
    errors { code message field }
  }
}"""
UPSERT = """
mutation($input: UpsertEndUsersInput!) {
  upsertEndUsers(input: $input) { endUsers { id externalId } errors { code message field } }
}"""
ALLOCATE = """
mutation($input: AllocateCreditsInput!) {
  allocateCredits(input: $input) {
    balance { pool allocated used remaining status } replayed errors { code message field }
  }
}"""
RELEASE = """
mutation($input: AllocateCreditsInput!) {
  releaseCredits(input: $input) {
    balance { pool allocated used remaining status } errors { code message field }
  }
}"""
CONSUME = """
mutation($input: ConsumeCreditsInput!) {
  consumeCredits(input: $input) {
    balance { pool allocated used remaining expired status version lowBalanceThreshold }
    replayed
    errors { code message field }
  }
}"""
APPLICATION = """
query($id: ID!) {
  application(id: $id) {
    id name
    pools { key purchased allocated used remaining expired unallocated status }
    endUsers(first: 100) {
      totalCount
      pageInfo { hasNextPage endCursor }
      edges { cursor node { id externalId balances { pool allocated used remaining status } } }
    }
  }
}"""
END_USER = """
query($id: ID!, $externalId: String) {
  application(id: $id) {
    endUser(externalId: $externalId) {
      id externalId balance(pool: "ai") { allocated used remaining status }
    }
  }
}"""


ISSUE = """
mutation($input: IssueEndUserTokenInput!) {
  issueEndUserToken(input: $input) { token expiresAt errors { code message } }
}"""


CREATE_CODE = """
mutation($input: IssueEndUserTokenInput!) {
  createTemporaryCode(input: $input) { code expiresAt errors { code message } }
}"""


EXCHANGE = """
mutation($code: String!) {
  exchangeTemporaryCode(code: $code) { token expiresAt errors { code message } }
}"""


WEBHOOK_FIELDS = "id url description events enabled disabledReason failingSince"
CREATE_WEBHOOK = f"""
mutation($input: CreateWebhookEndpointInput!) {{
  createWebhookEndpoint(input: $input) {{
    endpoint {{ {WEBHOOK_FIELDS} }} secret errors {{ code message field }}
  }}
}}"""
UPDATE_WEBHOOK = f"""
mutation($input: UpdateWebhookEndpointInput!) {{
  updateWebhookEndpoint(input: $input) {{
    endpoint {{ {WEBHOOK_FIELDS} }} errors {{ code message field }}
  }}
}}"""
ROTATE_WEBHOOK_SECRET = """
mutation($id: ID!, $overlap: Int!) {
  rotateWebhookSecret(id: $id, overlapSeconds: $overlap) {
    endpoint { id previousSecretExpiresAt } secret errors { code message field }
  }
}"""
WEBHOOK_DELIVERIES = """
query($id: ID!, $first: Int!, $after: String, $filter: WebhookDeliveryFilter) {
  application(id: $id) {
    webhookEndpoints {
      id
      deliveries(first: $first, after: $after, filter: $filter) {
        totalCount pageInfo { hasNextPage endCursor }
        edges { node { id messageId eventType status attempts responseStatus latencyMs
                       lastError deliveredAt payload } }
      }
    }
  }
}"""
