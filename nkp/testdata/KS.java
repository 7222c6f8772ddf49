import java.security.*; import java.io.*; import javax.crypto.*; import javax.crypto.spec.*; import java.util.*;
public class KS { public static void main(String[] a) throws Exception {
 if (a[0].equals("read")) { KeyStore ks = KeyStore.getInstance("PKCS12"); char[] pw = a[2].equals("-")? new char[0] : a[2].toCharArray();
   try (FileInputStream in = new FileInputStream(a[1])) { ks.load(in, pw); }
   for (String al : Collections.list(ks.aliases())) { Key k = ks.getKey(al, pw); System.out.println(al+" "+k.getAlgorithm()+" "+HexFormat.of().formatHex(k.getEncoded())); } }
 else { KeyStore ks = KeyStore.getInstance("PKCS12"); ks.load(null,null); char[] pw = a[2].equals("-")? new char[0] : a[2].toCharArray();
   SecretKey k = new SecretKeySpec(HexFormat.of().parseHex(a[3]), "AES");
   ks.setEntry(a[4], new KeyStore.SecretKeyEntry(k), new KeyStore.PasswordProtection(pw));
   try (FileOutputStream o = new FileOutputStream(a[1])) { ks.store(o, pw); } } } }
