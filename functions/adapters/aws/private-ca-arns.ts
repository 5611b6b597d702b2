/**
 * An AWS Private CA ARN and a Private CA template ARN: the one definition that the functions' configuration, the CA
 * registration custom resource and the stack's settings check against. No SDK import, so the CDK app can use it.
 */
export const PRIVATE_CA_ARN_PATTERN = /^arn:aws[a-z-]*:acm-pca:[a-z0-9-]+:\d{12}:certificate-authority\/[0-9a-f-]{36}$/;
export const PRIVATE_CA_TEMPLATE_ARN_PATTERN = /^arn:aws[a-z-]*:acm-pca:::template\/[A-Za-z0-9_/]+$/;
