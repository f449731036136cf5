"""The image verifier: which images need signatures, and whether trusted keys signed them.

`Verifier` is the webhook's `ImageVerifier` (`await verifier(policies, workload)` -> facts by
image string) and also serves `mlgate check --verify-images` and `mlgate verify-image`.

- Only images covered by a signature entry of a policy governing the workload are verified,
  each against the keys of the entries covering it.
- A tag is resolved to its digest; a signature counts only for the digest it names.
- Results are cached: verified digests for `success_ttl`, failures for `failure_ttl`, tag
  resolutions for `tag_ttl`. Identical concurrent lookups share one registry round trip, so a pod
  with eight containers of one image costs one verification. The cache key holds the key
  material itself, and the cache is dropped whenever the policies' signature rules change, so
  a rotated key (in a policy or in a Secret) never answers from the old key's results.
- Each verification has a deadline (below the webhook's), every request a timeout; a hanging or
  hostile registry costs one bounded verification, never a stalled webhook.
- Every failure is a fact with a reason that says what to fix; nothing raises to the caller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mlgate.engine.images import oci_models
from mlgate.engine.policy import CompiledPolicy, ImageFact, KeyRef, SignatureRule
from mlgate.engine.references import InvalidReference, Reference, matches_any, parse
from mlgate.engine.scope import governing
from mlgate.engine.workloads import WorkloadView
from mlgate.registry.auth import Credential
from mlgate.registry.cache import SingleFlight, TtlCache
from mlgate.registry.client import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    ClientOptions,
    Manifest,
    RegistryClient,
    RegistryError,
    Repository,
)
from mlgate.registry.cosign import (
    BUNDLE_MEDIA_TYPES,
    SIGNATURE_ANNOTATION,
    SIMPLESIGNING_MEDIA_TYPE,
    Problem,
    TrustedKey,
    Verdict,
    verify_bundle,
    verify_simplesigning,
)
from mlgate.registry.keys import (
    KeyFailure,
    KeyResolver,
    PullSecrets,
    Secrets,
    SecretSource,
    no_secrets,
)

log = logging.getLogger("mlgate.registry")


@dataclass(frozen=True, slots=True)
class VerifierOptions:
    client: ClientOptions = field(default_factory=ClientOptions)
    deadline: float = 6.0  # seconds for one image's whole verification
    max_signatures: int = 64  # per format; more are not examined
    success_ttl: float = 600.0
    failure_ttl: float = 15.0
    tag_ttl: float = 30.0  # how long a tag -> digest resolution is trusted
    secret_ttl: float = 10.0  # key and pull Secrets
    pull_secrets: tuple[tuple[str, str], ...] = ()  # (namespace, name), for every workload
    # host -> credential used when no pull Secret has one (a docker config file, offline)
    credentials: Mapping[str, Credential] = field(default_factory=dict)
    cache_entries: int = 4096
    fetch_concurrency: int = 8  # per verification


@dataclass(frozen=True, slots=True)
class Found:
    """One signature examined: where it is and what it proves."""

    format: str  # "cosign" (classic .sig) | "bundle" (sigstore bundle)
    location: str
    verified_by: frozenset[str] = frozenset()
    problem: str = ""


@dataclass(frozen=True, slots=True)
class Report:
    """Everything learnt about one image; `fact()` is what the engine judges."""

    reference: str
    digest: str | None = None
    verified_by: frozenset[str] = frozenset()
    error: str | None = None
    found: tuple[Found, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return bool(self.verified_by) and self.error is None

    def fact(self) -> ImageFact:
        return ImageFact(self.digest, self.verified_by, None if self.ok else self.error)


KeySet = tuple[tuple[str, str], ...]  # sorted (key id, key fingerprint)


def _key_set(keys: Iterable[TrustedKey]) -> KeySet:
    return tuple(sorted({(k.id, k.fingerprint) for k in keys}))


def _names(ids: Iterable[str], limit: int = 3) -> str:
    ordered = sorted(ids)
    shown = ", ".join(ordered[:limit])
    return shown + (f" and {len(ordered) - limit} more" if len(ordered) > limit else "")


@dataclass
class _Candidate:
    format: str
    location: str
    verdict: Awaitable[Verdict]


@dataclass(frozen=True, slots=True)
class _Need:
    """One image string to verify: its parsed reference, keys and pull Secrets."""

    reference: Reference
    keys: tuple[KeyRef, ...]
    pull_secrets: tuple[str, ...]  # names in the workload's namespace


def _fingerprint(credential: Credential | None) -> str:
    return credential.fingerprint if credential is not None else ""


def _cache_key(
    ref: Reference, keys: Sequence[TrustedKey], credential: Credential | None
) -> tuple[str, KeySet, str]:
    return (str(ref), _key_set(keys), _fingerprint(credential))


class Verifier:
    """Verifies images against trusted keys; call it as the webhook's ImageVerifier."""

    def __init__(
        self,
        client: RegistryClient,
        options: VerifierOptions | None = None,
        secrets: SecretSource | None = None,
        namespace_labels: Callable[[str], Mapping[str, str] | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.options = options or VerifierOptions()
        self._secrets = Secrets(secrets or no_secrets, self.options.secret_ttl, clock)
        self.keys = KeyResolver(self._secrets)
        self.pull = PullSecrets(self._secrets)
        self._namespace_labels = namespace_labels
        self._reports: TtlCache[tuple[str, KeySet, str], Report] = TtlCache(
            self.options.cache_entries, clock
        )
        self._tags: TtlCache[tuple[str, str], str] = TtlCache(self.options.cache_entries, clock)
        self._flight: SingleFlight[tuple[str, KeySet, str], Report] = SingleFlight()
        self._tag_flight: SingleFlight[tuple[str, str], str | RegistryError] = SingleFlight()
        self._rules: tuple[SignatureRule, ...] | None = None
        self.registry_verifications = 0  # cold verifications done: for tests and benchmarks

    # -- the webhook's ImageVerifier ------------------------------------------------------------

    async def __call__(
        self, policies: tuple[CompiledPolicy, ...], workload: WorkloadView
    ) -> Mapping[str, ImageFact]:
        try:
            plan = self.plan(policies, workload)
        except Exception:  # a bug: no facts, so every signature rule fails closed
            log.exception("planning image verification failed")
            return {}
        if not plan:
            return {}
        try:
            async with asyncio.timeout(self.options.deadline + 1.0):
                return await self._facts(plan, workload.namespace)
        except Exception as exc:  # errors are values: the webhook gets facts, never a traceback
            if isinstance(exc, TimeoutError):
                reason = f"timeout: image verification took longer than {self.options.deadline:g}s"
            else:
                log.exception("image verification failed")
                reason = f"image verification failed: {type(exc).__name__}: {exc}"
            return {image: ImageFact(error=reason) for image in plan}

    def invalidate(self) -> None:
        """Forget every verification (key rotation, new CA...)."""
        self._reports.clear()
        self._tags.clear()
        self._secrets.invalidate()

    def _observe_rules(self, policies: tuple[CompiledPolicy, ...]) -> None:
        rules = tuple(
            rule
            for p in policies
            if p.images is not None and p.images.signatures is not None
            for rule in p.images.signatures
        )
        if rules != self._rules:
            if self._rules is not None:
                log.info("signature rules changed: dropping cached verifications")
                self.invalidate()
            self._rules = rules

    def plan(
        self, policies: tuple[CompiledPolicy, ...], workload: WorkloadView
    ) -> dict[str, _Need]:
        """Images covered by a signature entry of a governing policy, with those entries' keys."""
        self._observe_rules(policies)
        labels = self._namespace_labels(workload.namespace) if self._namespace_labels else None
        matched = governing(policies, workload.namespace, labels, workload.kind, workload.labels)
        rules = [
            rule
            for p in matched
            if p.images is not None and p.images.signatures is not None
            for rule in p.images.signatures
        ]
        if not rules:
            return {}
        needs: dict[str, _Need] = {}
        # `oci://` models are pulled as modelcars, with the pods' secrets: the first pod's stand
        # for these workload-level references.
        models = tuple(oci_models(workload))
        for n, pod in enumerate(workload.pods):
            secrets = _pull_secret_names(pod.spec)
            for container in (*pod.containers, *(models if n == 0 else ())):
                image = container.image
                if image is None:
                    continue
                if image in needs:
                    need = needs[image]
                    merged = need.pull_secrets + tuple(
                        s for s in secrets if s not in need.pull_secrets
                    )
                    needs[image] = _Need(need.reference, need.keys, merged)
                    continue
                try:
                    ref = parse(image)
                except InvalidReference:
                    continue  # the engine reports it
                covered = False
                keys: dict[str, KeyRef] = {}
                for rule in rules:
                    if matches_any(rule.images, ref):
                        covered = True
                        keys.update((k.id, k) for k in rule.keys)
                if covered:
                    needs[image] = _Need(ref, tuple(keys.values()), secrets)
        return needs

    async def _facts(self, plan: Mapping[str, _Need], namespace: str) -> dict[str, ImageFact]:
        # Known keys and cached reports are taken without a trip through the event loop: the
        # warm path (every admission of an already verified image) suspends nowhere.
        refs = {k.id: k for need in plan.values() for k in need.keys}
        resolved: dict[str, TrustedKey | KeyFailure] = {}
        for ref in refs.values():
            if (known := self.keys.resolve_cached(ref)) is not None:
                resolved[ref.id] = known
        unknown = [r for r in refs.values() if r.id not in resolved]
        if unknown:
            looked_up = await asyncio.gather(*(self.keys.resolve(r) for r in unknown))
            resolved.update((r.id, k) for r, k in zip(unknown, looked_up, strict=True))
        credentials: dict[tuple[str, ...], tuple[dict[str, Credential], list[str]]] = {}
        for need in plan.values():
            if need.pull_secrets not in credentials:
                secret_refs = tuple((namespace, n) for n in need.pull_secrets)
                credentials[need.pull_secrets] = await self.pull.credentials(
                    secret_refs + self.options.pull_secrets
                )
        jobs: dict[str, Awaitable[Report]] = {}
        reports: dict[str, Report] = {}
        failures: dict[str, list[KeyFailure]] = {}
        for image, need in plan.items():
            keys = [k for ref in need.keys if isinstance(k := resolved[ref.id], TrustedKey)]
            failures[image] = [
                f for ref in need.keys if isinstance(f := resolved[ref.id], KeyFailure)
            ]
            if not keys:
                continue
            host = need.reference.host
            creds, _ = credentials[need.pull_secrets]
            credential = creds.get(host) or self.options.credentials.get(host)
            cached = self._reports.get(_cache_key(need.reference, keys, credential))
            if cached is not None:
                reports[image] = cached
            else:
                jobs[image] = self.verify(need.reference, keys, credential)
        if jobs:
            reports.update(zip(jobs, await asyncio.gather(*jobs.values()), strict=True))
        facts: dict[str, ImageFact] = {}
        for image, need in plan.items():
            problems = [f.reason for f in failures[image]]
            pull_problems = credentials[need.pull_secrets][1]
            report = reports.get(image)
            if report is None:
                reason = "; ".join(problems) or "the signature rules covering it list no key"
                facts[image] = ImageFact(error=reason)
                continue
            fact = report.fact()
            if fact.error is not None:
                extra = problems + [
                    p for p in pull_problems if report.error and "refused" in report.error
                ]
                if extra:
                    fact = ImageFact(
                        fact.digest, fact.verified_by, f"{fact.error}; also: {'; '.join(extra)}"
                    )
            facts[image] = fact
        return facts

    # -- one image -----------------------------------------------------------------------------

    async def verify(
        self, ref: Reference, keys: Sequence[TrustedKey], credential: Credential | None = None
    ) -> Report:
        """Whether `keys` signed the image `ref` names: cached, de-duplicated, bounded in time."""
        cache_key = _cache_key(ref, keys, credential)
        cached = self._reports.get(cache_key)
        if cached is not None:
            return cached
        return await self._flight.do(
            cache_key, lambda: self._verify_and_cache(cache_key, ref, keys, credential)
        )

    async def _verify_and_cache(
        self,
        cache_key: tuple[str, KeySet, str],
        ref: Reference,
        keys: Sequence[TrustedKey],
        credential: Credential | None,
    ) -> Report:
        try:
            async with asyncio.timeout(self.options.deadline):
                report = await self._verify(ref, keys, credential)
        except TimeoutError:
            report = Report(
                str(ref),
                ref.digest,
                error=f"timeout: registry {ref.host} did not let mlgate finish verifying "
                f"{ref.repository} within {self.options.deadline:g}s",
            )
        except RegistryError as exc:
            report = Report(str(ref), ref.digest, error=str(exc))
        except Exception as exc:  # a bug must still be a fact, not an escaped exception
            log.exception("verifying %s failed", ref)
            report = Report(
                str(ref), ref.digest, error=f"verification failed: {type(exc).__name__}: {exc}"
            )
        ttl = self.options.success_ttl if report.ok else self.options.failure_ttl
        if ref.digest is None:  # a tag may move: trust what it resolved to only briefly
            ttl = min(ttl, self.options.tag_ttl)
        self._reports.put(cache_key, report, ttl)
        return report

    async def _verify(
        self, ref: Reference, keys: Sequence[TrustedKey], credential: Credential | None
    ) -> Report:
        repo = Repository(ref.host, ref.path)
        if ref.digest is None:
            # By tag: resolve it, then verify the digest it names as if pinned, so the tag and
            # digest forms of one image share the digest's cache entry and flight.
            digest = await self._resolve_tag(repo, ref.effective_tag or "latest", credential)
            pinned = await self.verify(
                Reference(ref.host, ref.path, None, digest), keys, credential
            )
            note = f"tag {ref.effective_tag} resolves to {digest}"
            return replace(pinned, reference=str(ref), notes=(note, *pinned.notes))
        self.registry_verifications += 1
        return await _Examination(
            self, repo=repo, digest=ref.digest, keys=keys, credential=credential
        ).run(str(ref))

    async def _resolve_tag(self, repo: Repository, tag: str, credential: Credential | None) -> str:
        key = (f"{repo}:{tag}", _fingerprint(credential))
        cached = self._tags.get(key)
        if cached is not None:
            return cached

        async def resolve() -> str | RegistryError:
            try:
                manifest = await self.client.manifest(repo, tag, credential)
            except RegistryError as exc:
                return exc
            if manifest is None:
                return RegistryError(
                    f"image {repo}:{tag} not found in registry {repo.host}", "not-found"
                )
            self._tags.put(key, manifest.digest, self.options.tag_ttl)
            return manifest.digest

        found = await self._tag_flight.do(key, resolve)
        if isinstance(found, RegistryError):
            raise found
        return found


def _pull_secret_names(spec: Mapping[str, Any]) -> tuple[str, ...]:
    entries = spec.get("imagePullSecrets")
    if not isinstance(entries, list):
        return ()
    names: list[str] = []
    for entry in entries:
        name = entry.get("name") if isinstance(entry, Mapping) else None
        if isinstance(name, str) and name and name not in names:
            names.append(name)
    return tuple(names)


def signature_tag(digest: str, suffix: str) -> str:
    """`sha256:<hex>` -> `sha256-<hex><suffix>`: cosign's classic tag and the referrers fallback."""
    return digest.replace(":", "-", 1) + suffix


class _Examination:
    """Finding and judging the signatures of one digest (classic and bundle, concurrently)."""

    def __init__(
        self,
        verifier: Verifier,
        *,
        repo: Repository,
        digest: str,
        keys: Sequence[TrustedKey],
        credential: Credential | None,
    ) -> None:
        self.client = verifier.client
        self.limit = verifier.options.max_signatures
        self.repo = repo
        self.digest = digest
        self.keys = keys
        self.credential = credential
        self.errors: list[RegistryError] = []
        self.overflow: list[str] = []
        self._blobs: dict[str, asyncio.Future[bytes]] = {}
        self._fetching = asyncio.Semaphore(verifier.options.fetch_concurrency)

    async def run(self, reference: str) -> Report:
        try:
            return await self._run(reference)
        finally:  # on a deadline, stop fetching what nobody will read
            for blob in self._blobs.values():
                blob.cancel()

    async def _run(self, reference: str) -> Report:
        found = await asyncio.gather(self._classic(), self._bundles(), return_exceptions=True)
        candidates: list[_Candidate] = []
        for result in found:
            if isinstance(result, RegistryError):
                self.errors.append(result)
            elif isinstance(result, BaseException):
                raise result
            else:
                candidates.extend(result)
        verdicts = await asyncio.gather(*(c.verdict for c in candidates), return_exceptions=True)
        examined: list[Found] = []
        judged: list[Verdict] = []
        for candidate, verdict in zip(candidates, verdicts, strict=True):
            if isinstance(verdict, RegistryError):
                self.errors.append(verdict)
                examined.append(Found(candidate.format, candidate.location, problem=str(verdict)))
                continue
            if isinstance(verdict, BaseException):
                raise verdict
            judged.append(verdict)
            problem = ""
            if verdict.problem is not None:
                problem = verdict.detail or _PROBLEMS.get(verdict.problem, verdict.problem.name)
            examined.append(
                Found(candidate.format, candidate.location, verdict.verified_by, problem)
            )
        verified = frozenset().union(*(v.verified_by for v in judged))
        notes = tuple(self.overflow)
        if verified:
            return Report(reference, self.digest, verified, None, tuple(examined), notes)
        return Report(
            reference, self.digest, frozenset(), self._reason(judged), tuple(examined), notes
        )

    def _reason(self, judged: list[Verdict]) -> str:
        overflow = f" ({'; '.join(self.overflow)})" if self.overflow else ""
        telling = [v for v in judged if v.problem is not None and v.problem >= Problem.MALFORMED]
        if telling:
            best = max(telling, key=lambda v: v.problem or 0)
            return best.detail + overflow
        if self.errors:
            return str(self.errors[0]) + overflow
        where = f"{self.repo}@{self.digest}"
        keys = _names(k.id for k in self.keys)
        if not judged:
            return (
                f"no cosign signature found for {where} (neither a "
                f"{signature_tag(self.digest, '.sig')} signature nor a sigstore bundle)"
            )
        unsupported = [v for v in judged if v.problem is Problem.UNSUPPORTED]
        if len(unsupported) == len(judged):
            return unsupported[0].detail + overflow
        return (
            f"{len(judged)} signature(s) of {where} found, but none verifies with the trusted "
            f"key(s) {keys}: signed with another key, or the signature or its payload was "
            f"altered{overflow}"
        )

    # -- fetching ---------------------------------------------------------------------------------

    def _blob(self, digest: str) -> asyncio.Future[bytes]:
        """Each blob once per examination: cosign's payloads repeat across signatures."""
        future = self._blobs.get(digest)
        if future is None:

            async def fetch() -> bytes:
                async with self._fetching:
                    return await self.client.blob(self.repo, digest, self.credential)

            future = asyncio.ensure_future(fetch())
            self._blobs[digest] = future
        return future

    def _limit(self, items: list[Any], what: str) -> list[Any]:
        if len(items) > self.limit:
            self.overflow.append(
                f"{what} lists {len(items)} signatures; only the first {self.limit} were examined"
            )
            return items[: self.limit]
        return items

    async def _classic(self) -> list[_Candidate]:
        tag = signature_tag(self.digest, ".sig")
        manifest = await self.client.manifest(
            self.repo, tag, self.credential, accept=(OCI_MANIFEST, DOCKER_MANIFEST)
        )
        if manifest is None:
            return []
        layers = manifest.doc.get("layers")
        if not isinstance(layers, list):
            return [self._broken("cosign", f"{self.repo}:{tag}", "it has no layers list")]
        signatures = [
            (i, layer)
            for i, layer in enumerate(layers)
            if isinstance(layer, Mapping) and layer.get("mediaType") == SIMPLESIGNING_MEDIA_TYPE
        ]
        candidates = []
        for i, layer in self._limit(signatures, f"{self.repo}:{tag}"):
            location = f"{self.repo}:{tag} layer {i}"
            candidates.append(_Candidate("cosign", location, self._judge_classic(layer)))
        return candidates

    def _broken(self, fmt: str, location: str, why: str) -> _Candidate:
        async def verdict() -> Verdict:
            return Verdict(
                problem=Problem.MALFORMED, detail=f"malformed signature manifest {location}: {why}"
            )

        return _Candidate(fmt, location, verdict())

    async def _judge_classic(self, layer: Mapping[str, Any]) -> Verdict:
        digest = layer.get("digest")
        annotations = layer.get("annotations")
        if not isinstance(digest, str) or not isinstance(annotations, Mapping):
            return Verdict(
                problem=Problem.MALFORMED,
                detail="malformed signature layer: no digest or annotations",
            )
        if SIGNATURE_ANNOTATION not in annotations:
            return Verdict(
                problem=Problem.MALFORMED,
                detail=f"signature layer has no {SIGNATURE_ANNOTATION} annotation",
            )
        payload = await self._blob(digest)
        return verify_simplesigning(
            self.keys, payload, annotations[SIGNATURE_ANNOTATION], self.digest
        )

    async def _bundles(self) -> list[_Candidate]:
        index = await self.client.referrers(self.repo, self.digest, self.credential)
        where = f"referrers of {self.repo}@{self.digest}"
        if index is None:
            tag = signature_tag(self.digest, "")
            fallback = await self.client.manifest(
                self.repo, tag, self.credential, accept=(OCI_INDEX,)
            )
            if fallback is None or not fallback.is_index:
                return []
            index, where = fallback.doc, f"{self.repo}:{tag}"
        manifests = index.get("manifests")
        if not isinstance(manifests, list):
            return []
        # The descriptor's artifactType is the manifest's, or else its config's media type:
        # cosign's bundles carry the bundle type, but registries (and the fallback tag index
        # that go-containerregistry writes) may show the empty config type instead.
        referrers = [
            m
            for m in manifests
            if isinstance(m, Mapping)
            and isinstance(m.get("digest"), str)
            and m.get("artifactType", EMPTY_CONFIG) in _BUNDLE_ARTIFACT_TYPES
        ]
        candidates = []
        for descriptor in self._limit(referrers, where):
            location = f"{self.repo}@{descriptor['digest']}"
            candidates.append(
                _Candidate("bundle", location, self._judge_bundle(descriptor["digest"]))
            )
        return candidates

    async def _judge_bundle(self, digest: str) -> Verdict:
        async with self._fetching:
            manifest: Manifest | None = await self.client.manifest(
                self.repo, digest, self.credential, accept=(OCI_MANIFEST,)
            )
        if manifest is None:
            raise RegistryError(
                f"registry {self.repo.host} lists referrer {digest} but does not have it",
                "registry",
            )
        layers = manifest.doc.get("layers")
        bundles = [
            layer["digest"]
            for layer in (layers if isinstance(layers, list) else [])
            if isinstance(layer, Mapping)
            and layer.get("mediaType") in BUNDLE_MEDIA_TYPES
            and isinstance(layer.get("digest"), str)
        ]
        if not bundles:
            return Verdict(
                problem=Problem.MALFORMED,
                detail=f"referrer {digest} holds no sigstore bundle layer",
            )
        verdicts = [verify_bundle(self.keys, await self._blob(b), self.digest) for b in bundles[:4]]
        verified = frozenset().union(*(v.verified_by for v in verdicts))
        if verified:
            return Verdict(verified_by=verified)
        return max(verdicts, key=lambda v: v.problem or 0)


EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
_BUNDLE_ARTIFACT_TYPES = BUNDLE_MEDIA_TYPES | {EMPTY_CONFIG}

_PROBLEMS = {
    Problem.BAD_SIGNATURE: "does not verify with any trusted key",
    Problem.UNSUPPORTED: "a format mlgate does not verify",
}


def make_verifier(
    options: VerifierOptions,
    secrets: SecretSource | None = None,
    namespace_labels: Callable[[str], Mapping[str, str] | None] | None = None,
) -> Verifier:
    return Verifier(RegistryClient(options.client), options, secrets, namespace_labels)
