"""The API's /v1/webhook_endpoints and /v1/webhook_event_types routes, as the SDKs'
`client.webhooks` calls them (the logic: `batch_core/webhook_endpoints.py`). Every route on
one endpoint answers another tenant's id as it answers an unknown one: 404."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query

from batch_core.api_models import MAX_ID_CHARS, WebhookEndpointList
from batch_core.models import WebhookEndpoint
from batch_core.webhook_endpoints import (
    DeletedWebhookEndpoint,
    WebhookEndpointCreateParams,
    WebhookEndpoints,
    WebhookEndpointTestResult,
    WebhookEndpointUpdateParams,
    WebhookEndpointWithSecret,
    WebhookEventTypeList,
    WebhookRotateSecretParams,
    WebhookTestParams,
)
from batch_core.wiring import default_stages
from handlers.api_document import answers
from handlers.api_routing import IdInPath, tenant_of

router = Router()  # type: ignore[no-untyped-call]


def _endpoints() -> WebhookEndpoints:
    return default_stages().webhook_endpoints


@router.post(
    "/v1/webhook_endpoints",
    summary="Register a webhook endpoint; its signing secret is shown only here",
    responses=answers(WebhookEndpointWithSecret, body=True),
)
def create_webhook_endpoint(params: WebhookEndpointCreateParams) -> WebhookEndpointWithSecret:
    return _endpoints().create(tenant_of(router), params)


@router.get(
    "/v1/webhook_endpoints",
    summary="List webhook endpoints, newest first",
    responses=answers(WebhookEndpointList, 404),
)
def list_webhook_endpoints(
    after: Annotated[str | None, Query(max_length=MAX_ID_CHARS)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> WebhookEndpointList:
    return _endpoints().list(tenant_of(router), after=after, limit=limit)


@router.get(
    "/v1/webhook_endpoints/<webhook_endpoint_id>",
    summary="Retrieve a webhook endpoint",
    responses=answers(WebhookEndpoint, 404),
)
def retrieve_webhook_endpoint(webhook_endpoint_id: IdInPath) -> WebhookEndpoint:
    return _endpoints().get(tenant_of(router), webhook_endpoint_id).endpoint


@router.post(
    "/v1/webhook_endpoints/<webhook_endpoint_id>",
    summary="Update a webhook endpoint: the fields sent change (a disabled one is enabled)",
    responses=answers(WebhookEndpoint, 404, 409, body=True),
)
def update_webhook_endpoint(
    webhook_endpoint_id: IdInPath, params: WebhookEndpointUpdateParams
) -> WebhookEndpoint:
    return _endpoints().update(tenant_of(router), webhook_endpoint_id, params)


@router.delete(
    "/v1/webhook_endpoints/<webhook_endpoint_id>",
    summary="Delete a webhook endpoint",
    responses=answers(DeletedWebhookEndpoint, 404),
)
def delete_webhook_endpoint(webhook_endpoint_id: IdInPath) -> DeletedWebhookEndpoint:
    return _endpoints().delete(tenant_of(router), webhook_endpoint_id)


@router.post(
    "/v1/webhook_endpoints/<webhook_endpoint_id>/rotate_secret",
    summary="A new signing secret, shown only here; the old one stops signing at once, or "
    "in 24 hours with keep_old_secret_active_for_24_hours",
    responses=answers(WebhookEndpointWithSecret, 404, 409, body=True),
)
def rotate_webhook_secret(
    webhook_endpoint_id: IdInPath, params: WebhookRotateSecretParams
) -> WebhookEndpointWithSecret:
    return _endpoints().rotate_secret(tenant_of(router), webhook_endpoint_id, params)


@router.post(
    "/v1/webhook_endpoints/<webhook_endpoint_id>/test",
    summary="Send a signed sample event now; the result is what the receiver answered "
    "(a receiver that does not answer is a 409)",
    responses=answers(WebhookEndpointTestResult, 404, 409, body=True),
)
def test_webhook_endpoint(
    webhook_endpoint_id: IdInPath, params: WebhookTestParams
) -> WebhookEndpointTestResult:
    return _endpoints().test(tenant_of(router), webhook_endpoint_id, params)


@router.get(
    "/v1/webhook_event_types",
    summary="The webhook event types this API sends",
    responses=answers(WebhookEventTypeList),
)
def list_webhook_event_types() -> WebhookEventTypeList:
    return _endpoints().event_types()
