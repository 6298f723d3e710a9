#!/usr/bin/env bash
# make k8s-validate: every manifest in k8s/ against the Kubernetes schema (strict: unknown
# fields are errors too), with PyPI's kubernetes-validate in its own venv under out/.
# Needs PyPI once; not part of `make test`.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${K8S_VENV:-out/k8s-validate-venv}
KUBE_VERSION=${K8S_VERSION:-1.33.0}
# Pinned, so that a new release's schemas cannot change the verdict unnoticed.
PKG=kubernetes-validate==1.33.1

if [[ ! -f $VENV/.ok ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "$PKG"
    touch "$VENV/.ok"
fi

mapfile -t files < <(find k8s -name '*.yaml' | sort)
[[ ${#files[@]} -gt 0 ]] || { echo "k8s-validate: no manifests in k8s/" >&2; exit 1; }

# The validator must catch a broken manifest, or a pass means nothing: a Job with a misspelt
# field and a wrong type.
bad=$(mktemp --suffix=.yaml)
trap 'rm -f "$bad"' EXIT
sed -e 's/completionMode: Indexed/completionMod: Indexed/' -e 's/parallelism: 4/parallelism: "four"/' \
    k8s/s0/job.yaml >"$bad"
if "$VENV/bin/kubernetes-validate" --strict -k "$KUBE_VERSION" "$bad" >/dev/null 2>&1; then
    echo "k8s-validate: a broken manifest passed: the validator is not working" >&2
    exit 1
fi

"$VENV/bin/kubernetes-validate" --strict -k "$KUBE_VERSION" "${files[@]}"
echo "k8s-validate: ${#files[@]} manifests valid against Kubernetes $KUBE_VERSION (strict)"
