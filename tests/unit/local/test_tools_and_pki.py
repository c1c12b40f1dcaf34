from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ganforge.local import tools
from ganforge.local.pki import CertificateAuthority, service_account_keys


def test_missing_tool_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANFORGE_TOOLS_CACHE", str(tmp_path))
    with pytest.raises(tools.ToolMissingError, match="run `make tools`"):
        tools.tool_path("kube-apiserver")


def test_tool_path_is_versioned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANFORGE_TOOLS_CACHE", str(tmp_path))
    version = tools.versions().etcd
    binary = tmp_path / f"etcd-{version}" / "etcd"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert tools.tool_path("etcd") == binary


def test_unknown_tool_is_rejected() -> None:
    with pytest.raises(KeyError, match="unknown tool 'kubelet'"):
        tools.tool_path("kubelet")


def test_pinned_kubernetes_is_recent_enough() -> None:
    major, minor = tools.versions().kubernetes.lstrip("v").split(".")[:2]
    assert (int(major), int(minor)) >= (1, 33)


def test_issued_certificate_carries_identity_and_chains_to_ca(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    pair = ca.issue("node", "system:node:a", organizations=("system:nodes",),
                    ip_addresses=("10.0.0.1",), dns_names=("a",), client=True, server=True)
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    ca_cert = x509.load_pem_x509_certificate(ca.pair.cert.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:a"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.1"]
    public_key = ca_cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    assert oct(pair.key.stat().st_mode & 0o777) == "0o600"


def test_a_second_start_keeps_the_ca_and_service_account_keys(tmp_path: Path) -> None:
    first = CertificateAuthority(tmp_path)
    leaf = first.issue("admin", "kubernetes-admin", client=True)
    keys = service_account_keys(tmp_path)
    signing_key = keys.key.read_bytes()

    again = CertificateAuthority(tmp_path)
    assert again.cert_pem == first.cert_pem
    assert service_account_keys(tmp_path).key.read_bytes() == signing_key
    # A certificate issued before the restart still chains to the CA after it.
    cert = x509.load_pem_x509_certificate(leaf.cert.read_bytes())
    public_key = x509.load_pem_x509_certificate(again.cert_pem).public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    # ...and one issued after it by the reloaded CA too.
    fresh = x509.load_pem_x509_certificate(again.issue("node", "system:node:a", client=True).cert.read_bytes())
    public_key.verify(fresh.signature, fresh.tbs_certificate_bytes, ec.ECDSA(fresh.signature_hash_algorithm))


def test_a_ca_key_without_its_certificate_is_replaced(tmp_path: Path) -> None:
    first = CertificateAuthority(tmp_path)
    first.pair.cert.unlink()  # as after a crash between writing the key and the certificate
    second = CertificateAuthority(tmp_path)
    assert second.cert_pem != first.cert_pem and second.pair.cert.exists()
