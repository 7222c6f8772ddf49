package kmip

import "fmt"

// The tags this package reads or writes (KMIP 1.x §9.1.3.1; the same
// values as PyKMIP's kmip/core/enums.py Tags).
const (
	TagAttribute                    Tag = 0x420008
	TagAttributeIndex               Tag = 0x420009
	TagAttributeName                Tag = 0x42000A
	TagAttributeValue               Tag = 0x42000B
	TagBatchCount                   Tag = 0x42000D
	TagBatchErrorContinuationOption Tag = 0x42000E
	TagBatchItem                    Tag = 0x42000F
	TagCryptographicAlgorithm       Tag = 0x420028
	TagCryptographicLength          Tag = 0x42002A
	TagKey                          Tag = 0x42003F
	TagKeyBlock                     Tag = 0x420040
	TagKeyCompressionType           Tag = 0x420041
	TagKeyFormatType                Tag = 0x420042
	TagKeyMaterial                  Tag = 0x420043
	TagKeyValue                     Tag = 0x420045
	TagKeyWrappingData              Tag = 0x420046
	TagMaximumResponseSize          Tag = 0x420050
	TagObjectType                   Tag = 0x420057
	TagOperation                    Tag = 0x42005C
	TagProtocolVersion              Tag = 0x420069
	TagProtocolVersionMajor         Tag = 0x42006A
	TagProtocolVersionMinor         Tag = 0x42006B
	TagRequestHeader                Tag = 0x420077
	TagRequestMessage               Tag = 0x420078
	TagRequestPayload               Tag = 0x420079
	TagResponseHeader               Tag = 0x42007A
	TagResponseMessage              Tag = 0x42007B
	TagResponsePayload              Tag = 0x42007C
	TagResultMessage                Tag = 0x42007D
	TagResultReason                 Tag = 0x42007E
	TagResultStatus                 Tag = 0x42007F
	TagState                        Tag = 0x42008D
	TagSymmetricKey                 Tag = 0x42008F
	TagTimeStamp                    Tag = 0x420092
	TagUniqueBatchItemID            Tag = 0x420093
	TagUniqueIdentifier             Tag = 0x420094
)

var tagNames = map[Tag]string{
	TagAttribute: "Attribute", TagAttributeIndex: "AttributeIndex", TagAttributeName: "AttributeName",
	TagAttributeValue: "AttributeValue", TagBatchCount: "BatchCount",
	TagBatchErrorContinuationOption: "BatchErrorContinuationOption", TagBatchItem: "BatchItem",
	TagCryptographicAlgorithm: "CryptographicAlgorithm", TagCryptographicLength: "CryptographicLength",
	TagKey: "Key", TagKeyBlock: "KeyBlock", TagKeyCompressionType: "KeyCompressionType",
	TagKeyFormatType: "KeyFormatType", TagKeyMaterial: "KeyMaterial", TagKeyValue: "KeyValue",
	TagKeyWrappingData: "KeyWrappingData", TagMaximumResponseSize: "MaximumResponseSize",
	TagObjectType: "ObjectType", TagOperation: "Operation", TagProtocolVersion: "ProtocolVersion",
	TagProtocolVersionMajor: "ProtocolVersionMajor", TagProtocolVersionMinor: "ProtocolVersionMinor",
	TagRequestHeader: "RequestHeader", TagRequestMessage: "RequestMessage", TagRequestPayload: "RequestPayload",
	TagResponseHeader: "ResponseHeader", TagResponseMessage: "ResponseMessage",
	TagResponsePayload: "ResponsePayload", TagResultMessage: "ResultMessage", TagResultReason: "ResultReason",
	TagResultStatus: "ResultStatus", TagState: "State", TagSymmetricKey: "SymmetricKey",
	TagTimeStamp: "TimeStamp", TagUniqueBatchItemID: "UniqueBatchItemID", TagUniqueIdentifier: "UniqueIdentifier",
}

func (t Tag) String() string {
	if n, ok := tagNames[t]; ok {
		return n
	}
	return fmt.Sprintf("0x%06X", uint32(t))
}

// Operation is a KMIP operation.
type Operation uint32

// The operations this package sends, and those its test harness drives
// through PyKMIP (for names in messages).
const (
	OpCreate           Operation = 0x01
	OpLocate           Operation = 0x08
	OpGet              Operation = 0x0A
	OpGetAttributes    Operation = 0x0B
	OpActivate         Operation = 0x12
	OpRevoke           Operation = 0x13
	OpDestroy          Operation = 0x14
	OpQuery            Operation = 0x18
	OpDiscoverVersions Operation = 0x1E
)

var opNames = map[Operation]string{OpCreate: "Create", OpLocate: "Locate", OpGet: "Get",
	OpGetAttributes: "GetAttributes", OpActivate: "Activate", OpRevoke: "Revoke", OpDestroy: "Destroy",
	OpQuery: "Query", OpDiscoverVersions: "DiscoverVersions"}

func (o Operation) String() string {
	if n, ok := opNames[o]; ok {
		return n
	}
	return fmt.Sprintf("operation 0x%02X", uint32(o))
}

// ResultStatus is the status of a batch item in a response.
type ResultStatus uint32

// Result statuses.
const (
	StatusSuccess          ResultStatus = 0
	StatusOperationFailed  ResultStatus = 1
	StatusOperationPending ResultStatus = 2
	StatusOperationUndone  ResultStatus = 3
)

func (s ResultStatus) String() string {
	switch s {
	case StatusSuccess:
		return "Success"
	case StatusOperationFailed:
		return "Operation Failed"
	case StatusOperationPending:
		return "Operation Pending"
	case StatusOperationUndone:
		return "Operation Undone"
	}
	return fmt.Sprintf("status 0x%X", uint32(s))
}

// ResultReason says why an operation failed.
type ResultReason uint32

// Result reasons (KMIP 1.4 §9.1.3.2.29).
const (
	ReasonItemNotFound                ResultReason = 0x01
	ReasonResponseTooLarge            ResultReason = 0x02
	ReasonAuthenticationNotSuccessful ResultReason = 0x03
	ReasonInvalidMessage              ResultReason = 0x04
	ReasonOperationNotSupported       ResultReason = 0x05
	ReasonMissingData                 ResultReason = 0x06
	ReasonInvalidField                ResultReason = 0x07
	ReasonFeatureNotSupported         ResultReason = 0x08
	ReasonOperationCanceled           ResultReason = 0x09
	ReasonCryptographicFailure        ResultReason = 0x0A
	ReasonIllegalOperation            ResultReason = 0x0B
	ReasonPermissionDenied            ResultReason = 0x0C
	ReasonObjectArchived              ResultReason = 0x0D
	ReasonIndexOutOfBounds            ResultReason = 0x0E
	ReasonNamespaceNotSupported       ResultReason = 0x0F
	ReasonKeyFormatTypeNotSupported   ResultReason = 0x10
	ReasonKeyCompressionNotSupported  ResultReason = 0x11
	ReasonEncodingOptionError         ResultReason = 0x12
	ReasonKeyValueNotPresent          ResultReason = 0x13
	ReasonAttestationRequired         ResultReason = 0x14
	ReasonAttestationFailed           ResultReason = 0x15
	ReasonSensitive                   ResultReason = 0x16
	ReasonNotExtractable              ResultReason = 0x17
	ReasonObjectAlreadyExists         ResultReason = 0x18
	ReasonGeneralFailure              ResultReason = 0x100
)

var reasonNames = map[ResultReason]string{
	ReasonItemNotFound: "Item Not Found", ReasonResponseTooLarge: "Response Too Large",
	ReasonAuthenticationNotSuccessful: "Authentication Not Successful", ReasonInvalidMessage: "Invalid Message",
	ReasonOperationNotSupported: "Operation Not Supported", ReasonMissingData: "Missing Data",
	ReasonInvalidField: "Invalid Field", ReasonFeatureNotSupported: "Feature Not Supported",
	ReasonOperationCanceled: "Operation Canceled By Requester", ReasonCryptographicFailure: "Cryptographic Failure",
	ReasonIllegalOperation: "Illegal Operation", ReasonPermissionDenied: "Permission Denied",
	ReasonObjectArchived: "Object Archived", ReasonIndexOutOfBounds: "Index Out Of Bounds",
	ReasonNamespaceNotSupported:      "Application Namespace Not Supported",
	ReasonKeyFormatTypeNotSupported:  "Key Format Type Not Supported",
	ReasonKeyCompressionNotSupported: "Key Compression Type Not Supported",
	ReasonEncodingOptionError:        "Encoding Option Error", ReasonKeyValueNotPresent: "Key Value Not Present",
	ReasonAttestationRequired: "Attestation Required", ReasonAttestationFailed: "Attestation Failed",
	ReasonSensitive: "Sensitive", ReasonNotExtractable: "Not Extractable",
	ReasonObjectAlreadyExists: "Object Already Exists", ReasonGeneralFailure: "General Failure",
}

func (r ResultReason) String() string {
	if n, ok := reasonNames[r]; ok {
		return n
	}
	return fmt.Sprintf("reason 0x%X", uint32(r))
}

// State is the life-cycle state of a managed object.
type State uint32

// Object states (KMIP 1.x §3.22).
const (
	StatePreActive            State = 1
	StateActive               State = 2
	StateDeactivated          State = 3
	StateCompromised          State = 4
	StateDestroyed            State = 5
	StateDestroyedCompromised State = 6
)

func (s State) String() string {
	switch s {
	case 0:
		return "unknown"
	case StatePreActive:
		return "Pre-Active"
	case StateActive:
		return "Active"
	case StateDeactivated:
		return "Deactivated"
	case StateCompromised:
		return "Compromised"
	case StateDestroyed:
		return "Destroyed"
	case StateDestroyedCompromised:
		return "Destroyed Compromised"
	}
	return fmt.Sprintf("state 0x%X", uint32(s))
}

// ObjectType is the type of a managed object.
type ObjectType uint32

// Object types.
const (
	ObjectCertificate  ObjectType = 1
	ObjectSymmetricKey ObjectType = 2
	ObjectPublicKey    ObjectType = 3
	ObjectPrivateKey   ObjectType = 4
	ObjectSplitKey     ObjectType = 5
	ObjectTemplate     ObjectType = 6
	ObjectSecretData   ObjectType = 7
	ObjectOpaqueData   ObjectType = 8
	ObjectPGPKey       ObjectType = 9
)

var objectNames = [...]string{"", "Certificate", "Symmetric Key", "Public Key", "Private Key", "Split Key",
	"Template", "Secret Data", "Opaque Object", "PGP Key"}

func (o ObjectType) String() string {
	if o >= 1 && int(o) < len(objectNames) {
		return objectNames[o]
	}
	return fmt.Sprintf("object type 0x%X", uint32(o))
}

// KeyFormatType is the encoding of key material.
type KeyFormatType uint32

// The key formats a symmetric key comes in.
const (
	FormatRaw                     KeyFormatType = 0x01
	FormatOpaque                  KeyFormatType = 0x02
	FormatTransparentSymmetricKey KeyFormatType = 0x07
)

func (f KeyFormatType) String() string {
	switch f {
	case FormatRaw:
		return "Raw"
	case FormatOpaque:
		return "Opaque"
	case FormatTransparentSymmetricKey:
		return "Transparent Symmetric Key"
	}
	return fmt.Sprintf("key format 0x%X", uint32(f))
}

// Algorithm is a CryptographicAlgorithm.
type Algorithm uint32

// A few algorithms (for names in messages).
const (
	AlgDES        Algorithm = 0x01
	AlgTripleDES  Algorithm = 0x02
	AlgAES        Algorithm = 0x03
	AlgRSA        Algorithm = 0x04
	AlgHMACSHA256 Algorithm = 0x09
)

func (a Algorithm) String() string {
	switch a {
	case 0:
		return "unknown algorithm"
	case AlgDES:
		return "DES"
	case AlgTripleDES:
		return "3DES"
	case AlgAES:
		return "AES"
	case AlgRSA:
		return "RSA"
	case AlgHMACSHA256:
		return "HMAC-SHA256"
	}
	return fmt.Sprintf("algorithm 0x%X", uint32(a))
}

// Batch error continuation options.
const (
	batchContinue = 1
	batchStop     = 2
)

// ProtocolVersion is a KMIP protocol version.
type ProtocolVersion struct{ Major, Minor int32 }

func (v ProtocolVersion) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// DefaultVersion is the version requests carry: KMIP 1.1, which vCenter
// speaks and every 1.x server accepts (Get and GetAttributes are encoded
// the same from 1.0 to 1.4).
var DefaultVersion = ProtocolVersion{1, 1}
